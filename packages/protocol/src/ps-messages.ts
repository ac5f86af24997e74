import { z } from 'zod';
import { errorEnvelopeSchema, FreshetError, type ErrorEnvelope } from './errors.js';
import { decodeFrame, encodeFrame, f32, i8, u32, type Frame, type FrameArray } from './frame.js';
import { count, expectArrays, header, tableId, wrongLength } from './frame-checks.js';
import { fromHalf, toHalf } from './half.js';
import { fromQ8, q8Bytes, q8Rounding, toQ8 } from './q8.js';

/**
 * Parameter-server messages: pull, push, delta and snapshot, as tensor frames.
 * Keys are interleaved u32 pairs (see keys.ts); values and gradients are row-major f32.
 * Every decoder checks array kinds and lengths against the header, so a handler receives
 * either a well-formed message or a FreshetError (BAD_FRAME / WRONG_LENGTH / BAD_REQUEST).
 */

const version = z.number().int().min(0);

// ---------------------------------------------------------------- error replies

const errorHeaderSchema = z.object({ error: errorEnvelopeSchema });

export function encodeErrorReply(e: ErrorEnvelope): Uint8Array {
  return encodeFrame({ error: e });
}
/** Throws the FreshetError carried by an error reply; returns the frame otherwise. */
export function throwIfErrorReply(frame: Frame): Frame {
  const h = frame.header as { error?: unknown } | null;
  if (h && typeof h === 'object' && 'error' in h) {
    throw FreshetError.fromEnvelope(errorHeaderSchema.parse(h).error);
  }
  return frame;
}

// ---------------------------------------------------------------- pull

export const pullHeaderSchema = z.object({
  op: z.literal('pull'),
  worker: z.string().max(128).optional(),
  /** Worker clock (SSP). */
  clock: z.number().int().min(0).optional(),
  /** Rows of state-pushing tables as w, z, n (see `pullWidth`). */
  state: z.boolean().optional(),
  /** Embedding rows in the reply as binary16. */
  half: z.boolean().optional(),
  /** Embedding rows of dim ≥ 4 in the reply as int8 with a scale per row (q8.ts); narrower as binary16. */
  q8: z.boolean().optional(),
  /**
   * Names this pull so the batch's push can name it instead of repeating its keys (see
   * {@link PushTable.keyless}); unique per batch and worker incarnation.
   */
  session: z.string().min(1).max(256).optional(),
  tables: z.array(z.object({ t: tableId, n: count })).max(4096),
});
export type PullHeader = z.infer<typeof pullHeaderSchema>;
export interface PullTable {
  t: number;
  keys: Uint32Array;
}
export interface PullRequest {
  worker?: string | undefined;
  clock?: number | undefined;
  /** Asks for w, z, n of state-pushing tables (a worker of a sequential-FTRL model). */
  state?: boolean | undefined;
  /** Asks for embedding rows as binary16 (half the bytes; dense tensors and state stay f32). */
  half?: boolean | undefined;
  /** Asks for embedding rows as int8 + a scale per row where dim ≥ 4, binary16 below (q8.ts). */
  q8?: boolean | undefined;
  /** Asks the shard to keep the keys for the push that follows (see {@link pullHeaderSchema}). */
  session?: string | undefined;
  tables: PullTable[];
}

export function encodePull(req: PullRequest): Uint8Array {
  const h: PullHeader = { op: 'pull', tables: req.tables.map((t) => ({ t: t.t, n: t.keys.length / 2 })) };
  if (req.worker !== undefined) h.worker = req.worker;
  if (req.clock !== undefined) h.clock = req.clock;
  if (req.state) h.state = true;
  if (req.half) h.half = true;
  if (req.q8) h.q8 = true;
  if (req.session !== undefined) h.session = req.session;
  return encodeFrame(
    h,
    req.tables.map((t) => t.keys),
  );
}
export function decodePull(data: Uint8Array): PullRequest {
  const frame = decodeFrame(data);
  const h = header(pullHeaderSchema, frame);
  expectArrays(frame, h.tables.length);
  return {
    worker: h.worker,
    clock: h.clock,
    state: h.state,
    half: h.half,
    q8: h.q8,
    session: h.session,
    tables: h.tables.map((t, i) => {
      const keys = u32(frame, i);
      if (keys.length !== t.n * 2) wrongLength('pull keys', keys.length, t.n * 2);
      return { t: t.t, keys };
    }),
  };
}

export const pullReplyHeaderSchema = z.object({
  version,
  /**
   * The shard kept this pull's keys under its `session`: the push may leave them out. Absent when
   * the shard did not (a shard that predates sessions, or one whose session memory is full).
   */
  session: z.literal(true).optional(),
  /**
   * `q: 8`: the table's rows are int8 with a scale per row (q8.ts). `last`, dense tables only:
   * the id of the push that last changed the tensor (a token of the shard's start when none
   * did), so a dense replica can tell at its next flush whether anyone changed it since.
   */
  tables: z.array(
    z.object({
      t: tableId,
      n: count,
      dim: z.number().int().min(1),
      q: z.literal(8).optional(),
      last: z.string().max(4096).optional(),
    }),
  ),
});
export interface PullReplyTable {
  t: number;
  dim: number;
  values: Float32Array;
  /** Sent as binary16 (decoded back to float32 on arrival). */
  half?: boolean | undefined;
  /** Sent as int8 with a scale per row (q8.ts; decoded back to float32 on arrival). */
  q8?: boolean | undefined;
  /** Dense tables: the id of the push that last changed the tensor (see the header schema). */
  last?: string | undefined;
}
export interface PullReply {
  /** The shard's version when the values were read: echo it in the push as `base`. */
  version: number;
  /** The shard kept the pull's keys (see {@link pullReplyHeaderSchema}). */
  session?: boolean | undefined;
  tables: PullReplyTable[];
}
export function encodePullReply(r: PullReply): Uint8Array {
  return encodeFrame(
    {
      version: r.version,
      ...(r.session ? { session: true } : {}),
      tables: r.tables.map((t) => ({
        t: t.t,
        n: t.values.length / t.dim,
        dim: t.dim,
        ...(t.q8 ? { q: 8 as const } : {}),
        ...(t.last !== undefined ? { last: t.last } : {}),
      })),
    },
    r.tables.map((t) => rowsOut(t)),
  );
}

/** A table's rows as they travel: int8 + scales, binary16 or float32. */
function rowsOut(t: {
  dim: number;
  values: Float32Array;
  half?: boolean | undefined;
  q8?: boolean | undefined;
}) {
  return t.q8 ? toQ8(t.values, t.dim) : t.half ? toHalf(t.values) : t.values;
}
/** The rows of table i back as float32, checked against n × dim. */
function rowsIn(frame: Frame, i: number, t: { n: number; dim: number; q?: 8 | undefined }, what: string) {
  if (t.q === 8) {
    const bytes = i8(frame, i);
    if (bytes.length !== q8Bytes(t.n, t.dim)) wrongLength(what, bytes.length, q8Bytes(t.n, t.dim));
    return fromQ8(bytes, t.dim);
  }
  const values = f32(frame, i);
  if (values.length !== t.n * t.dim) wrongLength(what, values.length, t.n * t.dim);
  return values;
}

/**
 * How embedding rows' values travel: float32, binary16, or int8 with a scale per row where the
 * row has `Q8_MIN_DIM` (4) or more values (binary16 below).
 */
export type RowEncoding = 'f32' | 'f16' | 'q8';
export function decodePullReply(data: Uint8Array): PullReply {
  const frame = throwIfErrorReply(decodeFrame(data));
  const h = header(pullReplyHeaderSchema, frame);
  expectArrays(frame, h.tables.length);
  return {
    version: h.version,
    session: h.session,
    tables: h.tables.map((t, i) => {
      const values = rowsIn(frame, i, t, 'pull values');
      return { t: t.t, dim: t.dim, values, ...(t.last !== undefined ? { last: t.last } : {}) };
    }),
  };
}

// ---------------------------------------------------------------- push

export const pushHeaderSchema = z.object({
  op: z.literal('push'),
  /**
   * Unique per push attempt series; a shard applies one id once (idempotent retries). An id of
   * `+`-joined parts (a dense replica's flush of several batches) is a duplicate when any part
   * was applied, and applying it remembers every part.
   */
  id: z.string().min(1).max(4096),
  worker: z.string().max(128),
  clock: z.number().int().min(0).default(0),
  /** Shard version the gradients were computed on (from the pull reply). */
  base: version,
  /** Publication time (ms since epoch) of the oldest event in the batch: freshness probes. */
  eventTs: z.number().optional(),
  /**
   * Multiplier on the tables' learning rates for this push (worker-side decay schedule and
   * plateau lowering). Absent means 1; shards that predate it ignore it.
   */
  lrScale: z.number().positive().max(1e3).optional(),
  /**
   * Examples the gradients are the mean loss over. Adagrad and FTRL tables multiply by it
   * (summed-loss gradients: their hyper-parameters mean the same at every batch size).
   * Absent means 1.
   */
  examples: z
    .number()
    .int()
    .min(1)
    .max(1 << 24)
    .optional(),
  /**
   * The arrays are weight deltas to add, not gradients (a worker's dense replica flushing what its
   * own optimizer did; a warm-start import's rows): dense tensors or embedding rows, no optimizer
   * step, no staleness policy.
   */
  add: z.literal(true).optional(),
  /** The pull (its `session`) whose keys the tables marked `s` stand on. */
  session: z.string().min(1).max(256).optional(),
  tables: z
    .array(
      z.object({
        t: tableId,
        n: count,
        dim: z.number().int().min(1),
        /**
         * Keys left out: they are this table's keys in the session's pull, in that order (the
         * frame holds an empty key array in their place).
         */
        s: z.literal(1).optional(),
        /**
         * The gradients went as binary16 scaled by 2^e (see {@link PushTable.half}): the decoder
         * multiplies by 2^-e. Absent: float32 as they are.
         */
        e: z.number().int().min(-126).max(126).optional(),
        /** `q: 8`: the gradients went as int8 rows with a scale per row (see {@link PushTable.q8}). */
        q: z.literal(8).optional(),
      }),
    )
    .max(4096),
});
export type PushHeader = z.infer<typeof pushHeaderSchema>;
export interface PushTable {
  t: number;
  dim: number;
  keys: Uint32Array;
  /** Row-major, n × dim, already summed per unique key. */
  grads: Float32Array;
  /** Examples in the batch that touched each key (feature admission counts). */
  counts: Uint32Array;
  /**
   * Send the gradients as binary16 (half the bytes; worker option `halfPush`, embedding rows only).
   * Batch-mean gradients are small, often below binary16's normal range (6.1e-5) where it loses
   * precision, or below 6e-8 where it flushes to zero; so the table is scaled by a power of two
   * (exact in float32) that puts its largest |g| near 2^14, and the header carries the exponent.
   */
  half?: boolean | undefined;
  /**
   * Send the gradients as int8 rows with a bfloat16 scale per row (q8.ts; dim + 2 bytes a row,
   * worker option `int8Push`), rounded stochastically so that no gradient is biased, a small one
   * included: the shard's sum over batches gets each right on average. Seeded by the push id,
   * so a retry sends the same bytes.
   */
  q8?: boolean | undefined;
  /** The int8 codes and scales as they came (decoded pushes): re-encoding sends them unchanged. */
  q8Codes?: Int8Array | undefined;
  /** The binary16 bits and their scale exponent as they came (decoded pushes), likewise. */
  halfBits?: { bits: Uint16Array; e: number } | undefined;
  /**
   * Leave the keys out: they are this table's keys in the request's `session` pull, in the same
   * order (8 bytes a row less). Decoded, `keys` is empty until the shard fills it from the pull.
   */
  keyless?: boolean | undefined;
}
export interface PushRequest {
  id: string;
  worker: string;
  clock: number;
  base: number;
  eventTs?: number | undefined;
  /** Learning-rate multiplier for this push (1 when absent). */
  lrScale?: number | undefined;
  /** Examples behind the (mean-loss) gradients; see {@link pushHeaderSchema}. */
  examples?: number | undefined;
  /** Weight deltas to add (see {@link pushHeaderSchema}). */
  add?: boolean | undefined;
  /** The pull whose keys the keyless tables stand on. */
  session?: string | undefined;
  tables: PushTable[];
}

export function encodePush(req: PushRequest): Uint8Array {
  const h: PushHeader = {
    op: 'push',
    id: req.id,
    worker: req.worker,
    clock: req.clock,
    base: req.base,
    tables: req.tables.map((t) =>
      t.keyless
        ? { t: t.t, n: t.counts.length, dim: t.dim, s: 1 as const }
        : { t: t.t, n: t.keys.length / 2, dim: t.dim },
    ),
  };
  if (req.session === undefined && req.tables.some((t) => t.keyless))
    throw new FreshetError('BAD_REQUEST', 'a keyless push table needs the push to name its session');
  const arrays: FrameArray[] = [];
  req.tables.forEach((t, i) => {
    const keys = t.keyless ? NO_KEYS : t.keys;
    if (t.q8 || t.q8Codes) {
      h.tables[i]!.q = 8;
      arrays.push(keys, t.q8Codes ?? toQ8(t.grads, t.dim, q8Rounding(`${req.id}/${t.t}`)), t.counts);
      return;
    }
    if (!t.half && !t.halfBits) {
      arrays.push(keys, t.grads, t.counts);
      return;
    }
    const { bits, e } = t.halfBits ?? scaledHalf(t.grads);
    if (e !== 0) h.tables[i]!.e = e;
    arrays.push(keys, bits, t.counts);
  });
  if (req.session !== undefined) h.session = req.session;
  if (req.eventTs !== undefined) h.eventTs = req.eventTs;
  if (req.lrScale !== undefined && req.lrScale !== 1) h.lrScale = req.lrScale;
  if (req.examples !== undefined && req.examples !== 1) h.examples = req.examples;
  if (req.add) h.add = true;
  return encodeFrame(h, arrays);
}

const NO_KEYS = new Uint32Array(0);

/**
 * What a shard decodes from gradients sent with `half` (the same scaling, rounding and unscaling
 * as {@link encodePush} and {@link decodePush}): a sender that keeps what it sent exactly can
 * carry the rounding error into its next push (error feedback).
 */
export function halfPushRoundTrip(g: Float32Array): Float32Array {
  const { bits, e } = scaledHalf(g);
  return unscaleHalf(fromHalf(bits), e);
}

/** Undoes {@link scaledHalf}'s 2^e in place (dividing by a power of two is exact). */
function unscaleHalf(decoded: Float32Array, e: number): Float32Array {
  if (e === 0) return decoded;
  const unscale = 2 ** -e;
  for (let j = 0; j < decoded.length; j++) decoded[j] = decoded[j]! * unscale;
  return decoded;
}

/** Largest |g| lands in [2^14, 2^15): well inside binary16 (max 65504) with full precision. */
function scaledHalf(g: Float32Array): { bits: Uint16Array; e: number } {
  let max = 0;
  for (let i = 0; i < g.length; i++) {
    const a = Math.abs(g[i]!);
    if (a > max) max = a; // NaN is skipped here and stays NaN in binary16: the shard refuses it
  }
  const e =
    max > 0 && Number.isFinite(max) ? Math.max(-126, Math.min(126, 14 - Math.floor(Math.log2(max)))) : 0;
  if (e === 0) return { bits: toHalf(g), e };
  const scale = 2 ** e;
  const scaled = new Float32Array(g.length);
  for (let i = 0; i < g.length; i++) scaled[i] = g[i]! * scale;
  return { bits: toHalf(scaled), e };
}
/** Decodes and shape-checks a push. Finiteness is checked by the shard before applying. */
export function decodePush(data: Uint8Array): PushRequest {
  const frame = decodeFrame(data);
  const h = header(pushHeaderSchema, frame);
  expectArrays(frame, h.tables.length * 3);
  return {
    id: h.id,
    worker: h.worker,
    clock: h.clock,
    base: h.base,
    eventTs: h.eventTs,
    lrScale: h.lrScale,
    examples: h.examples,
    add: h.add,
    session: h.session,
    tables: h.tables.map((t, i) => {
      const keys = u32(frame, 3 * i);
      const sent = frame.arrays[3 * i + 1];
      const codes = t.q === 8 ? i8(frame, 3 * i + 1) : undefined;
      if (codes && codes.length !== q8Bytes(t.n, t.dim))
        wrongLength('push int8 grads', codes.length, q8Bytes(t.n, t.dim));
      if (codes && t.e !== undefined)
        throw new FreshetError('BAD_FRAME', `push table ${t.t}: a binary16 scale on int8 gradients`);
      const grads = codes ? fromQ8(codes, t.dim) : f32(frame, 3 * i + 1);
      if (t.e !== undefined) {
        // only a binary16 array was scaled (and decoded into a copy: a float32 one is a view of
        // the request bytes, which the shard logs as they came)
        if (!(sent instanceof Uint16Array))
          throw new FreshetError('BAD_FRAME', `push table ${t.t}: a scale on float32 gradients`);
        unscaleHalf(grads, t.e);
      }
      const counts = u32(frame, 3 * i + 2);
      const keyless = t.s === 1;
      if (keyless && h.session === undefined)
        throw new FreshetError('BAD_REQUEST', `push table ${t.t}: keys left out but no session named`);
      if (keys.length !== (keyless ? 0 : t.n * 2))
        wrongLength('push keys', keys.length, keyless ? 0 : t.n * 2);
      if (grads.length !== t.n * t.dim) wrongLength('push grads', grads.length, t.n * t.dim);
      if (counts.length !== t.n) wrongLength('push counts', counts.length, t.n);
      // Came as binary16 or int8: the bits are kept as they came, so a shard logs a push it
      // rebuilt (its keys filled in from a pull session) at the size it arrived without
      // encoding the gradients again.
      const wire = codes
        ? { q8: true, q8Codes: codes }
        : sent instanceof Uint16Array
          ? { half: true, halfBits: { bits: sent, e: t.e ?? 0 } }
          : {};
      return keyless
        ? { t: t.t, dim: t.dim, keys, grads, counts, keyless: true, ...wire }
        : { t: t.t, dim: t.dim, keys, grads, counts, ...wire };
    }),
  };
}

export const pushReplyHeaderSchema = z.object({
  /** Shard version after applying. */
  version,
  /** τ measured for this push. */
  staleness: z.number().int().min(0),
  /** Rows updated (admitted rows only). */
  applied: count,
  /** True when the id had been applied before (a retry). */
  duplicate: z.boolean().default(false),
  /**
   * For an additive push (a dense replica's flush): per dense table, the id of the push that
   * changed it before this one (a token of the shard's start when none did; null: not known).
   * When it is the worker's own previous flush, or the `last` of its latest pull, the tensor is
   * exactly the worker's base and the pull that would refresh it is skipped.
   */
  prev: z.array(z.object({ t: tableId, id: z.string().max(4096).nullable() })).optional(),
});
export type PushReply = z.infer<typeof pushReplyHeaderSchema>;
export function encodePushReply(r: PushReply): Uint8Array {
  return encodeFrame(r);
}
export function decodePushReply(data: Uint8Array): PushReply {
  return header(pushReplyHeaderSchema, throwIfErrorReply(decodeFrame(data)));
}

// ---------------------------------------------------------------- deltas (shard → serving)

export const deltaHeaderSchema = z.object({
  shard: z.number().int().min(0),
  /** Consecutive per shard from 1; a gap means the subscriber missed a delta and must resync. */
  seq: z.number().int().min(1),
  version,
  /** Emission time, ms since epoch. */
  ts: z.number(),
  /** Oldest event publication times of the pushes folded into this delta (freshness probes). */
  eventTs: z.array(z.number()).max(1024).default([]),
  tables: z.array(
    z.object({ t: tableId, n: count, dim: z.number().int().min(1), dead: count, q: z.literal(8).optional() }),
  ),
});
export type DeltaHeader = z.infer<typeof deltaHeaderSchema>;
export interface DeltaTable {
  t: number;
  dim: number;
  keys: Uint32Array;
  values: Float32Array;
  /** Evicted rows: serving must drop them (tombstones). */
  deadKeys: Uint32Array;
  /** Values sent as binary16 (decoded back to float32 on arrival). */
  half?: boolean | undefined;
  /** Values sent as int8 with a scale per row (q8.ts). */
  q8?: boolean | undefined;
}
export interface Delta {
  shard: number;
  seq: number;
  version: number;
  ts: number;
  eventTs: number[];
  tables: DeltaTable[];
}
export function encodeDelta(d: Delta): Uint8Array {
  const arrays: FrameArray[] = [];
  for (const t of d.tables) arrays.push(t.keys, rowsOut(t), t.deadKeys);
  return encodeFrame(
    {
      shard: d.shard,
      seq: d.seq,
      version: d.version,
      ts: d.ts,
      eventTs: d.eventTs,
      tables: d.tables.map((t) => ({
        t: t.t,
        n: t.keys.length / 2,
        dim: t.dim,
        dead: t.deadKeys.length / 2,
        ...(t.q8 ? { q: 8 as const } : {}),
      })),
    },
    arrays,
  );
}
export function decodeDelta(data: Uint8Array): Delta {
  const frame = decodeFrame(data);
  const h = header(deltaHeaderSchema, frame);
  expectArrays(frame, h.tables.length * 3);
  return {
    ...h,
    tables: h.tables.map((t, i) => {
      const keys = u32(frame, 3 * i);
      const values = rowsIn(frame, 3 * i + 1, t, 'delta values');
      const deadKeys = u32(frame, 3 * i + 2);
      if (keys.length !== t.n * 2) wrongLength('delta keys', keys.length, t.n * 2);
      if (deadKeys.length !== t.dead * 2) wrongLength('delta dead keys', deadKeys.length, t.dead * 2);
      return { t: t.t, dim: t.dim, keys, values, deadKeys };
    }),
  };
}

// ---------------------------------------------------------------- snapshot pages

export const snapshotRequestSchema = z.object({
  op: z.literal('snapshot'),
  t: tableId,
  /** Opaque position from the previous page; 0 starts. */
  cursor: z.number().int().min(0).default(0),
  limit: z
    .number()
    .int()
    .min(1)
    .max(1 << 16)
    .default(8192),
});
export type SnapshotRequest = z.infer<typeof snapshotRequestSchema>;
export function encodeSnapshotRequest(r: Omit<SnapshotRequest, 'op'>): Uint8Array {
  return encodeFrame({ op: 'snapshot', ...r });
}
export function decodeSnapshotRequest(data: Uint8Array): SnapshotRequest {
  return header(snapshotRequestSchema, decodeFrame(data));
}

export const snapshotPageHeaderSchema = z.object({
  t: tableId,
  dim: z.number().int().min(1),
  n: count,
  version,
  /** Last delta seq published before this page was read: apply deltas after it. */
  seq: z.number().int().min(0),
  /** Cursor of the next page, or null at the end. */
  next: z.number().int().min(0).nullable(),
});
export interface SnapshotPage {
  t: number;
  dim: number;
  version: number;
  seq: number;
  next: number | null;
  keys: Uint32Array;
  values: Float32Array;
}
export function encodeSnapshotPage(p: SnapshotPage): Uint8Array {
  return encodeFrame(
    { t: p.t, dim: p.dim, n: p.keys.length / 2, version: p.version, seq: p.seq, next: p.next },
    [p.keys, p.values],
  );
}
export function decodeSnapshotPage(data: Uint8Array): SnapshotPage {
  const frame = throwIfErrorReply(decodeFrame(data));
  const h = header(snapshotPageHeaderSchema, frame);
  expectArrays(frame, 2);
  const keys = u32(frame, 0);
  const values = f32(frame, 1);
  if (keys.length !== h.n * 2) wrongLength('snapshot keys', keys.length, h.n * 2);
  if (values.length !== h.n * h.dim) wrongLength('snapshot values', values.length, h.n * h.dim);
  return { t: h.t, dim: h.dim, version: h.version, seq: h.seq, next: h.next, keys, values };
}
