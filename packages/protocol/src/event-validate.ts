import { EVENT_SCHEMA_VERSION, eventLimits, type EventKind, type FeedbackEvent } from './events.js';

/**
 * A fast path in front of the zod event schemas (events.ts), for the common case of a valid
 * event. zod's generic parse cost a worker about 90 µs per Criteo-like event (39 features), a
 * quarter of its main thread. {@link validEvent} returns exactly what zod's parse returns
 * (defaults applied, unknown keys dropped) when it is sure the event is valid, and undefined
 * otherwise: callers then ask zod, so every rejection keeps zod's message and dead-letter
 * reason. It never accepts what zod rejects; packages/protocol/test/event-validate.test.ts
 * checks both against each other on valid and broken events.
 */

const L = eventLimits;

/** A check of one field's value (present; undefined is never passed). */
type Check = (v: unknown) => boolean;

const isString =
  (max: number): Check =>
  (v) =>
    typeof v === 'string' && v.length <= max;
const id: Check = (v) => typeof v === 'string' && v.length >= 1 && v.length <= L.maxIdLength;
const finite: Check = (v) => typeof v === 'number' && Number.isFinite(v);
const between =
  (min: number, max: number): Check =>
  (v) =>
    typeof v === 'number' && v >= min && v <= max;
const positive: Check = (v) => finite(v) && (v as number) > 0;
const position: Check = (v) => Number.isInteger(v) && between(0, 100_000)(v);

/** A plain object (what JSON and msgpack decode to), without a key that would set a prototype. */
function plainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return (
    (proto === Object.prototype || proto === null) &&
    !Object.hasOwn(v, '__proto__') &&
    Object.getOwnPropertySymbols(v).length === 0
  );
}

function record(maxKey: number, maxEntries: number, value: Check): Check {
  return (v) => {
    if (!plainObject(v)) return false;
    let n = 0;
    for (const k in v) {
      if (!Object.hasOwn(v, k)) continue;
      if (++n > maxEntries || k.length < 1 || k.length > maxKey || !value(v[k])) return false;
    }
    return true;
  };
}

const text = isString(L.maxStringLength);
const tokens: Check = (v) => {
  if (!Array.isArray(v) || v.length > L.maxTokens) return false;
  // indexed, not every(): a hole is undefined to zod, which rejects it
  for (let i = 0; i < v.length; i++) if (!text(v[i])) return false;
  return true;
};
const features = record(128, L.maxFeatures, (v) => text(v) || finite(v) || tokens(v));
const meta = record(64, L.maxMetaEntries, (v) => isString(256)(v) || finite(v) || typeof v === 'boolean');

/** One field of a kind: its check, whether it must be there, and its default when absent. */
interface Field {
  check: Check;
  required: boolean;
  /** A fresh default per event (an object default must not be shared between events). */
  fallback?: () => unknown;
}
const req = (check: Check): Field => ({ check, required: true });
const opt = (check: Check, fallback?: () => unknown): Field =>
  fallback ? { check, required: false, fallback } : { check, required: false };

const base: Record<string, Field> = {
  v: opt(
    (v) => v === EVENT_SCHEMA_VERSION,
    () => EVENT_SCHEMA_VERSION,
  ),
  id: req(id),
  ts: req(positive),
  user: req(id),
  meta: opt(meta),
};
const shown = { request: req(id), item: req(id) };

/** Each kind's fields, as events.ts declares them. */
const kinds: Record<EventKind, Record<string, Field>> = {
  impression: {
    ...shown,
    position: opt(position),
    query: opt(text),
    features: opt(features, () => ({})),
    propensity: opt(between(0, 1)),
  },
  click: shown,
  conversion: { ...shown, value: opt(finite) },
  rating: {
    item: req(id),
    request: opt(id),
    rating: req(between(0, 10)),
    features: opt(features, () => ({})),
  },
  dwell: { ...shown, ms: req(between(0, 7 * 24 * 3600 * 1000)) },
  skip: shown,
  example: {
    item: opt(id),
    label: req(between(0, 1)),
    weight: opt(between(0, 1000), () => 1),
    features: req(features),
  },
};
const fieldsOf = new Map<string, [string, Field][]>(
  Object.entries(kinds).map(([k, f]) => [k, Object.entries({ ...base, ...f })]),
);

/**
 * The event zod would return for `raw`, or undefined when the fast path cannot vouch for it
 * (invalid, or unusual: ask zod). Values are reused, not copied: `raw` must not be used after.
 */
export function validEvent(raw: unknown): FeedbackEvent | undefined {
  if (!plainObject(raw) || typeof raw.kind !== 'string') return undefined;
  const fields = fieldsOf.get(raw.kind);
  if (!fields) return undefined;
  const out: Record<string, unknown> = { kind: raw.kind };
  for (const [name, f] of fields) {
    const v = raw[name];
    if (v === undefined) {
      // a key holding undefined is zod's business (its output keeps or drops it)
      if (f.required || Object.hasOwn(raw, name)) return undefined;
      if (f.fallback) out[name] = f.fallback();
    } else if (f.check(v)) out[name] = v;
    else return undefined;
  }
  return out as FeedbackEvent;
}
