import { deflateSync, inflateSync } from 'node:zlib';
import { FreshetError } from './errors.js';

/**
 * Compressed feedback events: a zlib stream (RFC 1950) of the JSON or msgpack event, usually with
 * a preset dictionary (FDICT) of sample events. Any language's zlib writes one (Python:
 * `zlib.compressobj(zdict=dictionary)`, Go: `zlib.NewWriterLevelDict`, Java: `Deflater.setDictionary`),
 * and the first byte (0x08–0x78 with a valid header check) can start neither a JSON object nor a
 * msgpack map, so receivers tell the forms apart without a header. The dictionary is named by its
 * Adler-32 (the DICTID zlib writes into the stream) and stored in the cluster's dictionary bucket;
 * a Criteo event of ~480 B msgpack compresses to ~170 B with one built from 2000 sample events.
 */

/** zlib uses at most the last 32 KiB of a dictionary (its window); more is waste on the wire. */
export const EVENT_DICTIONARY_MAX_BYTES = 32 * 1024;

/** Adler-32 of `bytes` (RFC 1950), the id zlib gives a preset dictionary. */
export function adler32(bytes: Uint8Array): number {
  let a = 1;
  let b = 0;
  const NMAX = 5552; // zlib's bound: bytes between reductions that keep the sums below 2^32
  for (let i = 0; i < bytes.length;) {
    const end = Math.min(bytes.length, i + NMAX);
    for (; i < end; i++) {
      a += bytes[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

/** A dictionary's id: its Adler-32 as 8 lowercase hex digits. */
export function eventDictionaryId(dictionary: Uint8Array): string {
  return adler32(dictionary).toString(16).padStart(8, '0');
}

/** Whether a payload is a zlib stream (deflate method, valid header check), not JSON or msgpack. */
export function isCompressedEvent(bytes: Uint8Array): boolean {
  if (bytes.length < 2) return false;
  const cmf = bytes[0]!;
  const flg = bytes[1]!;
  return (cmf & 0x0f) === 8 && cmf >> 4 <= 7 && ((cmf << 8) | flg) % 31 === 0;
}

/** The id of the dictionary a compressed payload needs, or undefined (none, or not compressed). */
export function compressedEventDictionary(bytes: Uint8Array): string | undefined {
  if (!isCompressedEvent(bytes) || (bytes[1]! & 0x20) === 0 || bytes.length < 6) return undefined;
  const id = ((bytes[2]! << 24) | (bytes[3]! << 16) | (bytes[4]! << 8) | bytes[5]!) >>> 0;
  return id.toString(16).padStart(8, '0');
}

/** Dictionaries by id (a Map fits); what a receiver knows at the moment it parses. */
export interface EventDictionaryLookup {
  get(id: string): Uint8Array | undefined;
}

/** Compresses one encoded event (zlib, with `dictionary` as its preset dictionary when given). */
export function compressEvent(
  payload: Uint8Array,
  o: { dictionary?: Uint8Array | undefined; level?: number | undefined } = {},
): Uint8Array {
  if (o.dictionary && o.dictionary.length > EVENT_DICTIONARY_MAX_BYTES) {
    throw new FreshetError(
      'CONFIG',
      `event dictionary of ${o.dictionary.length} B > ${EVENT_DICTIONARY_MAX_BYTES} B (zlib's window)`,
    );
  }
  const out = deflateSync(payload, {
    level: o.level ?? 6,
    ...(o.dictionary ? { dictionary: o.dictionary } : {}),
  });
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

export type InflateResult =
  | { ok: true; bytes: Uint8Array }
  | { ok: false; reason: 'UNKNOWN_DICTIONARY' | 'BAD_ENCODING' | 'OVERSIZE'; message: string };

/**
 * Inflates a compressed event to at most `maxBytes` (a small payload cannot expand into a large
 * allocation). Never throws on input.
 */
export function inflateEvent(
  bytes: Uint8Array,
  dictionaries: EventDictionaryLookup | undefined,
  maxBytes: number,
): InflateResult {
  const id = compressedEventDictionary(bytes);
  let dictionary: Uint8Array | undefined;
  if (id !== undefined) {
    dictionary = dictionaries?.get(id);
    if (!dictionary) {
      return {
        ok: false,
        reason: 'UNKNOWN_DICTIONARY',
        message: `compressed with dictionary ${id}, which this receiver does not have`,
      };
    }
  } else if ((bytes[1]! & 0x20) !== 0) {
    return { ok: false, reason: 'BAD_ENCODING', message: 'zlib header cut short' };
  }
  try {
    const out = inflateSync(bytes, { maxOutputLength: maxBytes, ...(dictionary ? { dictionary } : {}) });
    return { ok: true, bytes: new Uint8Array(out.buffer, out.byteOffset, out.byteLength) };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ERR_BUFFER_TOO_LARGE') {
      return { ok: false, reason: 'OVERSIZE', message: `inflates past ${maxBytes} B` };
    }
    return { ok: false, reason: 'BAD_ENCODING', message: `zlib: ${err.message}` };
  }
}

/**
 * A dictionary for {@link compressEvent} from sample events encoded as they will be sent: the
 * samples back to back, the last 32 KiB kept (zlib finds matches by distance; the newest samples
 * sit closest). Concatenated samples compressed Criteo events better than a dictionary of their
 * most frequent feature values (171 vs 178 B an event, 2000 samples).
 */
export function buildEventDictionary(samples: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const s of samples) total += s.length;
  const all = new Uint8Array(total);
  let at = 0;
  for (const s of samples) {
    all.set(s, at);
    at += s.length;
  }
  return all.slice(Math.max(0, total - EVENT_DICTIONARY_MAX_BYTES));
}
