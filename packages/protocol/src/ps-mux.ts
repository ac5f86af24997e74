import { z } from 'zod';
import { FreshetError } from './errors.js';
import { decodeFrame, encodeFrame } from './frame.js';
import { throwIfErrorReply } from './ps-messages.js';

/**
 * Host messages (docs/architecture.md, "Host routing"): several pulls, or several pushes, for
 * shards that run on one shard host, in one NATS message to that host instead of one message per
 * shard. Each part is the shard's own request frame, carried byte for byte (an i8 array: frames
 * are 4-byte multiples, so every part stays aligned and decodes without a copy); the reply carries
 * each shard's own reply frame (a success or an error envelope) in the same order, or says the
 * shard is not running on that host (the sender then asks the shard directly). A host message
 * never mixes pulls and pushes: a pull must not wait behind a push's log write.
 */

export type HostPartKind = 'pull' | 'push';

/**
 * Parts of one host message. A shard may appear more than once (parts of several batches); the
 * host hands them to it in order.
 */
export const MAX_HOST_PARTS = 4096;

const muxHeaderSchema = z
  .object({
    op: z.enum(['pull', 'push', 'delta']),
    shards: z.array(z.number().int().min(0).max(0xffff)).min(1).max(MAX_HOST_PARTS),
  })
  .strict();
const muxReplyHeaderSchema = z
  .object({
    /** Per part: 1 answered (its reply frame follows), 0 the shard does not run here. */
    here: z.array(z.union([z.literal(0), z.literal(1)])).max(MAX_HOST_PARTS),
  })
  .strict();

export interface HostRequest {
  /** `delta`: a host delta (no reply), {@link encodeHostDelta}. */
  op: HostPartKind | 'delta';
  parts: { shard: number; frame: Uint8Array }[];
}

/** Per part of a {@link HostRequest}: the shard's reply frame, or undefined (not on that host). */
export type HostReply = (Uint8Array | undefined)[];

const asBytes = (a: Uint8Array) => new Int8Array(a.buffer, a.byteOffset, a.byteLength);
const asU8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function bad(what: string): never {
  throw new FreshetError('BAD_FRAME', `host message: ${what}`);
}

export function encodeHostRequest(r: HostRequest): Uint8Array {
  for (const p of r.parts)
    if (p.frame.byteLength % 4 !== 0)
      bad(`part for shard ${p.shard} is not a frame (${p.frame.byteLength} B)`);
  return encodeFrame(
    { op: r.op, shards: r.parts.map((p) => p.shard) },
    r.parts.map((p) => asBytes(p.frame)),
  );
}

export function decodeHostRequest(data: Uint8Array): HostRequest {
  const frame = decodeFrame(data);
  const h = muxHeaderSchema.safeParse(frame.header);
  if (!h.success) {
    throw new FreshetError('BAD_REQUEST', `host message: ${h.error.issues[0]?.message ?? 'bad header'}`);
  }
  if (frame.arrays.length !== h.data.shards.length)
    bad(`${frame.arrays.length} parts for ${h.data.shards.length} shards`);
  return {
    op: h.data.op,
    parts: h.data.shards.map((shard, i) => {
      const a = frame.arrays[i]!;
      if (!(a instanceof Int8Array)) bad(`part ${i} is not bytes`);
      return { shard, frame: asU8(a) };
    }),
  };
}

export function encodeHostReply(parts: HostReply): Uint8Array {
  const present: Int8Array[] = [];
  for (const p of parts) if (p) present.push(asBytes(p));
  return encodeFrame({ here: parts.map((p) => (p ? 1 : 0)) }, present);
}

/** The reply's parts; `expected` is the request's part count (a mismatch is BAD_FRAME). */
export function decodeHostReply(data: Uint8Array, expected: number): HostReply {
  // a host that failed the whole message answers with an error envelope: thrown here
  const frame = throwIfErrorReply(decodeFrame(data));
  const h = muxReplyHeaderSchema.safeParse(frame.header);
  if (!h.success) bad(h.error.issues[0]?.message ?? 'bad reply header');
  if (h.data.here.length !== expected) bad(`${h.data.here.length} parts answered, ${expected} asked`);
  let k = 0;
  const out: HostReply = h.data.here.map((here) => {
    if (!here) return undefined;
    const a = frame.arrays[k++];
    if (!(a instanceof Int8Array)) bad('reply part is not bytes');
    return asU8(a);
  });
  if (k !== frame.arrays.length) bad('more reply parts than answered shards');
  return out;
}

/**
 * A host delta: the deltas several shards of one host published in one tick, in one message on
 * `hostDelta(host)`, each part the shard's own delta frame (its seq, so a serving node checks
 * gaps per shard as before). A shard's parts keep their order.
 */
export function encodeHostDelta(parts: { shard: number; frame: Uint8Array }[]): Uint8Array {
  return encodeHostRequest({ op: 'delta', parts });
}

export function decodeHostDelta(data: Uint8Array): { shard: number; frame: Uint8Array }[] {
  const r = decodeHostRequest(data);
  if (r.op !== 'delta') throw new FreshetError('BAD_REQUEST', `host delta: a ${r.op} message`);
  return r.parts;
}
