import { Packr } from 'msgpackr';
import { z } from 'zod';
import {
  EVENT_SCHEMA_VERSION,
  eventKinds,
  eventLimits,
  eventSchemaByKind,
  type DeadLetterReason,
  type EventKind,
  type FeedbackEvent,
  type FeedbackEventInput,
} from './events.js';
import { inflateEvent, isCompressedEvent, type EventDictionaryLookup } from './event-compression.js';
import { validEvent } from './event-validate.js';

/**
 * Validation of inbound feedback events: bytes in, a typed event or a dead-letter reason out.
 * It never throws on input, so one bad message cannot stop a worker (invariant 5).
 */

export const parseEventOptionsSchema = z.object({
  /** Receiver clock, ms since the epoch; defaults to Date.now() at each call. */
  now: z.number().optional(),
  /** How far an event may be ahead of `now` (publisher clock skew). */
  maxSkewMs: z
    .number()
    .min(0)
    .default(5 * 60_000),
  /** How old an event may be; Infinity for offline replays that keep original timestamps. */
  maxAgeMs: z
    .number()
    .min(0)
    .or(z.literal(Infinity))
    .default(7 * 24 * 3600_000),
  maxBytes: z.number().int().min(1).default(eventLimits.maxBytes),
  /** Forces a decoder; by default it is sniffed from the first byte (after inflating). */
  encoding: z.enum(['json', 'msgpack']).optional(),
  /**
   * Dictionaries of compressed events by id (event-compression.ts); a compressed event whose
   * dictionary is not here is dead-lettered UNKNOWN_DICTIONARY. Read at each parse, so a Map
   * that later gains entries serves them.
   */
  dictionaries: z
    .custom<EventDictionaryLookup>((v) => typeof (v as { get?: unknown })?.get === 'function')
    .optional(),
});
export type ParseEventOptions = z.input<typeof parseEventOptionsSchema>;

/** A rejected event: a stable reason code and a human-readable message. */
export interface DeadLetter {
  reason: DeadLetterReason;
  message: string;
}
export type ParseEventResult = { ok: true; event: FeedbackEvent } | ({ ok: false } & DeadLetter);

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });
const utf8 = new TextDecoder('utf-8', { fatal: true });
const te = new TextEncoder();
const kinds: ReadonlySet<string> = new Set(eventKinds);
const idFields: ReadonlySet<string> = new Set(['id', 'user', 'request', 'item']);
/** The schema is three levels deep (event → features → token list); more is hostile or wrong. */
const MAX_DEPTH = 4;

const fail = (reason: DeadLetterReason, message: string): ParseEventResult => ({
  ok: false,
  reason,
  message: message.slice(0, 512),
});

/** Encodes an event as JSON (the portable form) or msgpack. */
export function encodeEvent(event: FeedbackEventInput, encoding: 'json' | 'msgpack' = 'json'): Uint8Array {
  return encoding === 'json' ? te.encode(JSON.stringify(event)) : packr.pack(event);
}

/** Options with defaults applied; see {@link compileParseOptions}. */
export type CompiledParseOptions = Readonly<z.infer<typeof parseEventOptionsSchema>>;
const compiled = new WeakSet<object>();
/** Compiles options once for hot loops: pass the result to {@link parseEvent} many times. */
export function compileParseOptions(opts: ParseEventOptions = {}): CompiledParseOptions {
  if (compiled.has(opts)) return opts as CompiledParseOptions;
  const o = Object.freeze(parseEventOptionsSchema.parse(opts));
  compiled.add(o);
  return o;
}

function sniff(bytes: Uint8Array): 'json' | 'msgpack' | 'text' | 'binary' {
  for (let i = 0; i < bytes.length && i < 64; i++) {
    const b = bytes[i]!;
    if (b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d) continue;
    if (b === 0xef && bytes[i + 1] === 0xbb && bytes[i + 2] === 0xbf) return 'json'; // BOM
    if (b === 0x7b) return 'json';
    if ((b & 0xf0) === 0x80 || b === 0xde || b === 0xdf) return 'msgpack';
    return b >= 0x20 && b < 0x7f ? 'text' : 'binary';
  }
  return 'text';
}

/**
 * Walks the decoded value once: non-finite numbers, over-long strings and lists, and nesting
 * deeper than the schema allows are classified before zod sees them, so each gets its own reason.
 * Iterative, so a deeply nested hostile payload cannot overflow the stack.
 */
function scan(root: unknown): DeadLetter | undefined {
  const stack: [unknown, number, string][] = [[root, 0, '']];
  while (stack.length > 0) {
    const [v, depth, path] = stack.pop()!;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return { reason: 'NON_FINITE', message: `${path || 'value'} is ${v}` };
    } else if (typeof v === 'string') {
      if (v.length > eventLimits.maxStringLength) {
        return { reason: 'OVERSIZE', message: `${path} is a ${v.length}-char string` };
      }
    } else if (v !== null && typeof v === 'object') {
      if (depth >= MAX_DEPTH) return { reason: 'BAD_TYPE', message: `${path} nested too deep` };
      if (Array.isArray(v)) {
        if (v.length > eventLimits.maxTokens) {
          return { reason: 'OVERSIZE', message: `${path} has ${v.length} elements` };
        }
        for (let i = 0; i < v.length; i++) stack.push([v[i], depth + 1, `${path}[${i}]`]);
      } else {
        const entries = Object.entries(v as Record<string, unknown>);
        if (entries.length > eventLimits.maxFeatures + 16) {
          return { reason: 'OVERSIZE', message: `${path || 'event'} has ${entries.length} keys` };
        }
        for (const [k, x] of entries) stack.push([x, depth + 1, path ? `${path}.${k}` : k]);
      }
    }
  }
  return undefined;
}

/**
 * {@link scan}'s checks without its messages: true when nothing there would fail. Valid events
 * skip building a path string per value (about a quarter of the parse of a Criteo event); a failing one
 * is scanned again for its message.
 */
function clean(v: unknown, depth: number): boolean {
  if (typeof v === 'number') return Number.isFinite(v);
  if (typeof v === 'string') return v.length <= eventLimits.maxStringLength;
  if (v === null || typeof v !== 'object') return true;
  if (depth >= MAX_DEPTH) return false;
  if (Array.isArray(v)) {
    if (v.length > eventLimits.maxTokens) return false;
    for (let i = 0; i < v.length; i++) if (!clean(v[i], depth + 1)) return false;
    return true;
  }
  let n = 0;
  for (const k in v) {
    if (!Object.hasOwn(v, k)) continue;
    if (++n > eventLimits.maxFeatures + 16) return false;
    if (!clean((v as Record<string, unknown>)[k], depth + 1)) return false;
  }
  return true;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

function classify(issue: z.core.$ZodIssue, raw: unknown): DeadLetterReason {
  const leaf = issue.path[issue.path.length - 1];
  const value = valueAt(raw, issue.path);
  switch (issue.code) {
    case 'invalid_type':
      return value === undefined ? 'MISSING_FIELD' : 'BAD_TYPE';
    case 'too_small':
      return typeof value === 'string' && typeof leaf === 'string' && idFields.has(leaf)
        ? 'MISSING_FIELD'
        : 'INVALID';
    case 'too_big':
      return issue.origin === 'string' || issue.origin === 'array' ? 'OVERSIZE' : 'INVALID';
    case 'invalid_union':
      return 'BAD_TYPE';
    default:
      return 'INVALID';
  }
}

/**
 * Parses and validates one event (JSON or msgpack bytes). Returns the typed event with defaults
 * applied, or the dead-letter reason. Timestamps are checked against the receiver clock (`now`
 * argument, else `options.now`, else Date.now()) within the skew and age bounds.
 */
export function parseEvent(
  bytes: Uint8Array,
  options: ParseEventOptions | CompiledParseOptions = {},
  now?: number,
): ParseEventResult {
  const o = compileParseOptions(options);
  if (bytes.byteLength > o.maxBytes) return fail('OVERSIZE', `${bytes.byteLength} B > ${o.maxBytes} B`);
  if (bytes.byteLength === 0) return fail('BAD_JSON', 'empty payload');
  if (isCompressedEvent(bytes)) {
    const r = inflateEvent(bytes, o.dictionaries, o.maxBytes);
    if (!r.ok) return fail(r.reason, r.message);
    bytes = r.bytes;
    if (bytes.byteLength === 0) return fail('BAD_JSON', 'empty payload (inflated)');
  }
  const enc = o.encoding ?? sniff(bytes);
  let raw: unknown;
  if (enc === 'msgpack') {
    try {
      raw = packr.unpack(bytes);
    } catch (e) {
      return fail('BAD_ENCODING', `msgpack: ${(e as Error).message}`);
    }
  } else if (enc === 'binary') {
    return fail('BAD_ENCODING', 'neither JSON nor msgpack');
  } else {
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      return fail('BAD_ENCODING', 'invalid UTF-8');
    }
    try {
      raw = JSON.parse(text);
    } catch (e) {
      // Python's json.dumps and others write NaN/Infinity as bare tokens; name them precisely.
      const bare = text.replace(/"(?:[^"\\]|\\.)*"/g, '""');
      if (/(^|[^\w.])-?(NaN|Infinity)\b/.test(bare)) return fail('NON_FINITE', 'NaN or Infinity in JSON');
      return fail('BAD_JSON', (e as Error).message);
    }
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    return fail('BAD_TYPE', 'an event is a JSON object');
  }
  const obj = raw as Record<string, unknown>;
  if (obj.v !== undefined && obj.v !== EVENT_SCHEMA_VERSION) {
    return fail('UNSUPPORTED_VERSION', `schema version ${JSON.stringify(obj.v)?.slice(0, 32) ?? '?'}`);
  }
  if (obj.kind === undefined) return fail('MISSING_FIELD', 'kind is missing');
  if (typeof obj.kind !== 'string' || !kinds.has(obj.kind)) {
    return fail('UNKNOWN_KIND', `unknown kind ${JSON.stringify(obj.kind)?.slice(0, 64)}`);
  }
  if (!clean(raw, 0)) {
    const bad = scan(raw);
    if (bad) return fail(bad.reason, bad.message);
  }
  let event = validEvent(raw);
  if (!event) {
    const r = eventSchemaByKind[obj.kind as EventKind].safeParse(raw);
    if (!r.success) {
      const issue = r.error.issues[0]!;
      const where = issue.path.join('.') || 'event';
      return fail(classify(issue, raw), `${where}: ${issue.message}`);
    }
    event = r.data as FeedbackEvent;
  }
  now ??= o.now ?? Date.now();
  if (event.ts > now + o.maxSkewMs) {
    return fail('TS_FUTURE', `ts ${event.ts} is ${Math.round(event.ts - now)} ms ahead of the receiver`);
  }
  if (event.ts < now - o.maxAgeMs) {
    return fail('TS_PAST', `ts ${event.ts} is ${Math.round(now - event.ts)} ms old`);
  }
  return { ok: true, event };
}
