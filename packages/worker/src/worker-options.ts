import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { z } from 'zod';
import { compileModelConfig } from '@freshet/model';
import { natsOptionsSchema } from '@freshet/nats';
import { assertClusterName, FreshetError } from '@freshet/protocol';
import { joinerOptionsSchema } from './joiner-options.js';
import { MAX_LINGER_MS } from './host-router.js';
import { modelGuardSchema } from './model-guard.js';

const ms = z.number().int().min(1);

/** Learning-rate schedule: a per-push multiplier on every table's lr, applied by the shards. */
export const lrScheduleSchema = z
  .object({
    /** `inverse-sqrt`: 1/√(1 + seen/halfLife·3); `exponential`: 0.5^(seen/halfLife); `constant`: 1. */
    decay: z.enum(['constant', 'inverse-sqrt', 'exponential']).default('constant'),
    /** Examples after which the decay has halved the rate. */
    halfLifeExamples: z.number().positive().default(5_000_000),
    /** Lower the rate when the progressive loss stops improving. */
    plateau: z
      .object({
        enabled: z.boolean().default(true),
        /** Examples per loss window compared against the best window so far. */
        windowExamples: z.number().int().min(1).default(20_000),
        /** Windows without a relative improvement of `minImprovement` before lowering. */
        patience: z.number().int().min(1).default(3),
        minImprovement: z.number().min(0).default(0.002),
        factor: z.number().gt(0).lt(1).default(0.5),
        minScale: z.number().gt(0).max(1).default(0.05),
      })
      .prefault({}),
    /**
     * Page-Hinkley test on the progressive loss: when the loss rises above its recent mean by
     * more than the noise (the stream changed: a taste shift, a new catalogue), the plateau
     * lowering is undone and the rate is raised by `boost`, fading back to 1 over
     * `boostExamples`, so the model unlearns the old world quickly.
     */
    drift: z
      .object({
        enabled: z.boolean().default(true),
        /** Loss increase per example tolerated as noise (PH δ). */
        delta: z.number().min(0).default(0.01),
        /** Alarm threshold on the cumulative excess loss, in loss × examples (PH λ). */
        threshold: z.number().positive().default(60),
        /** Examples the reference mean of the loss averages over (an exponential moving mean). */
        meanExamples: z.number().int().min(100).default(20_000),
        /** Examples at the start of the stream and after an alarm before the test runs. */
        warmupExamples: z.number().int().min(0).default(5_000),
        /** Learning-rate multiplier right after an alarm. */
        boost: z.number().min(1).max(100).default(2),
        /** Examples over which the boost fades back to 1. */
        boostExamples: z.number().int().min(1).default(20_000),
      })
      .prefault({}),
  })
  .prefault({});
export type LrScheduleOptions = z.infer<typeof lrScheduleSchema>;

/** Options of one gradient worker process. */
export const workerOptionsSchema = z.object({
  cluster: z.string(),
  /** Stable id of this worker (leases, push ids, service metadata). */
  id: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/)
    .optional(),
  nats: natsOptionsSchema.prefault({}),
  /** Model configuration, validated by @freshet/model's createModel. */
  model: z.unknown(),
  /** Parameter-server shards (routing modulus). */
  shards: z.number().int().min(1).max(4096),
  /** Feedback partitions of the stream; each has one durable consumer shared by lease. */
  partitions: z.number().int().min(1).max(1024).default(8),
  batch: z
    .object({
      size: z.number().int().min(1).max(65_536).default(256),
      /** A partial batch is trained after this long rather than waiting for more events. */
      maxWaitMs: ms.default(50),
      /**
       * Fill batches from every partition this worker owns, not one at a time: with many
       * partitions at a modest rate, single-partition batches averaged 7.8 examples for a
       * configured 64. Such a batch's manifest is stored in a slot of each of its partitions,
       * so the next owner of any of them re-pushes it whole under its id (exactly once still).
       */
      crossPartition: z.boolean().default(true),
    })
    .prefault({}),
  compute: z
    .object({
      threads: z.number().int().min(1).max(64).default(2),
      /** Tasks queued beyond the threads before OVERLOADED. */
      maxQueue: z.number().int().min(0).default(8),
    })
    .prefault({}),
  /**
   * Batches between fetch and ack at once. Default 1: every pull then sees the previous push, so
   * no update is computed on stale weights. A second batch in flight overlaps the pull of one
   * batch with the compute of the other (about 10% more examples/s from a backlog here) but
   * adds a version of staleness to every push, which the dense weights pay for: on Criteo-10k,
   * the peer's wide&deep at batch 256, one pass, progressive AUC 0.62 with 2 in flight against
   * 0.65 with 1 (seeds 0–2; docs/learning-quality.md). Sequential FTRL (the lr model's default)
   * and the sync policy need 1: a second batch would train on z and n without the first one's
   * examples (MovieLens-latest-small at batch 256: 0.0042 AUC below per-example FTRL with two in
   * flight, 0.0000 with one).
   */
  maxInFlightBatches: z.number().int().min(1).max(64).optional(),
  /**
   * Start the next batch as soon as this one's push is sent, not when it is answered. Its pull
   * leaves the same connection after the push, and a shard applies a push as it arrives, so
   * the pull still sees every earlier push: no staleness is added, and the push's round trip
   * (the shard's write-ahead log included) overlaps the next batch's encode, pull and compute.
   * Batches whose push is sent but not yet answered count apart from `maxInFlightBatches` (at
   * most as many again). 0.52–0.60× the PyTorch peer's examples/s from a backlog against
   * 0.46–0.56× without, same AUC (docs/performance.md). On by default; off by default (and
   * refused) under the sync policy (a push is applied only when its whole step is) and with a
   * dense replica (the replica adds a batch's dense update once its push is answered). It was
   * off until the manifest-recovery races it made more frequent were fixed
   * (docs/multi-host-test.md).
   */
  overlapPush: z.boolean().optional(),
  /** Examples buffered from the stream ahead of batching (bounded; fetching pauses when full). */
  maxBufferedEvents: z.number().int().min(1).default(4096),
  requestTimeoutMs: ms.default(5000),
  /** How often running statistics of standardised columns go to KV for serving (while they change). */
  encoderStatsMs: ms.default(2000),
  retry: z
    .object({
      /** Attempts per shard request before the batch is handed back (nak) for redelivery. */
      attempts: z.number().int().min(1).default(10),
      baseMs: ms.default(50),
      maxMs: ms.default(2000),
      /** Re-pull + recompute rounds when a shard rejects a push as STALE. */
      staleRounds: z.number().int().min(0).default(3),
    })
    .prefault({}),
  /** Dense tables are reused from cache while their shard moved fewer versions than this (0: always pull). */
  denseCacheMaxLag: z.number().int().min(0).default(0),
  /**
   * Where dense tables (the MLP) learn. `shard`: pulled and pushed whole with every batch, the
   * shard's optimizer applies each batch's gradient. `replica`: the worker keeps a copy, applies
   * its own batches' gradients at once with the table's optimizer (dense-optimizer.ts), and every
   * `syncExamples` examples (or `maxDelayMs`) pushes the weight change since its last flush to
   * the shard (which adds it) and pulls the sum of every worker's changes back; the batches it
   * covers are acked only then, so an acked event's dense update is on the shard. Dense bytes
   * on the bus: three copies of the tensor per `syncExamples` examples instead of per batch.
   */
  /**
   * Pull embedding rows as binary16: half the bytes of a pull reply, the rows rounded to 11
   * significant bits for the gradient (the shard keeps and updates float32). Dense tensors and
   * sequential FTRL's state are always pulled as float32.
   */
  halfPull: z.boolean().default(false),
  /**
   * Ask for embedding rows of 4 or more values as int8 with a bfloat16 scale per row (dim + 2
   * bytes a row against 2·dim for `halfPull`), narrower rows as binary16. The gradient is computed
   * on rows within 1/254 of their largest value; the shard keeps and updates float32. Shards of
   * this version answer it; older ones answer float32. Dense tensors and FTRL state stay float32.
   */
  int8Pull: z.boolean().default(false),
  /**
   * Push embedding rows' gradients as binary16, each table scaled by a power of two carried in
   * the push (about half the push bytes). No error feedback: a value far below its table's
   * largest loses precision (see docs/performance.md for what it costs). Dense tensors and
   * sequential FTRL's state deltas are always pushed as float32.
   */
  halfPush: z.boolean().default(false),
  /**
   * Push the gradients of embedding rows of 4 or more values as int8 with a bfloat16 scale per
   * row (dim + 2 bytes a row; narrower rows as binary16), rounded stochastically: unbiased, so a
   * gradient far below its row's largest still reaches the shard on average, where rounding to
   * nearest would drop it every time. Shards of this version decode it (older ones refuse the
   * frame). Dense tensors and FTRL's state deltas stay float32.
   */
  int8Push: z.boolean().default(false),
  /**
   * Name each pull so the batch's push can leave out the keys the shard kept from it (8 bytes a
   * row: about a fifth of a binary16 push). Lossless; a shard that no longer holds them (it
   * restarted, or they aged out) answers SESSION_UNKNOWN and the push goes again with its keys,
   * and a shard that keeps none (`limits.pullSessionBytes: 0`, or older) is sent the keys.
   */
  pullSessions: z.boolean().default(true),
  /**
   * Host routing (docs/architecture.md): where the cluster's shard placement puts several shards
   * on one shard host, the requests a batch (or batches sent together) makes to them travel as
   * one message to that host, pulls and pushes apart; standalone shards, and hosts that do not
   * answer host messages, are asked one by one as before.
   */
  hostRouting: z
    .object({
      enabled: z.boolean().default(true),
      /** Largest host message; capped by the server's max_payload. */
      maxMessageBytes: z
        .number()
        .int()
        .min(64 * 1024)
        .default(8 * 1024 * 1024),
      /** After a host message fails, that host's shards are asked directly for this long. */
      cooldownMs: z.number().int().min(0).default(10_000),
      /**
       * How long a host message waits for the parts of batches sent soon after (0: only those
       * sent in the same turn of the event loop go together). Every pull and push waits this
       * long more; in exchange a busy worker sends fewer, larger messages, and a shard host
       * hands the parts of several batches to each of its threads at once (docs/performance.md,
       * "Coalescing a worker's batches"). Up to 250: a few batch intervals of a worker at a
       * large cluster's rate. With `hostMsgsPerS`, the least linger.
       */
      lingerMs: z.number().min(0).max(MAX_LINGER_MS).default(0),
      /**
       * Keep each shard host under this many host messages a second from all the workers: the
       * linger grows with the live workers (2000 × workers / hostMsgsPerS ms, at least `lingerMs`,
       * at most 250), as the shards' delta interval grows with the shards. Unset: `lingerMs`.
       */
      hostMsgsPerS: z.number().positive().optional(),
    })
    .strict()
    .prefault({}),
  dense: z
    .object({
      mode: z.enum(['shard', 'replica']).default('shard'),
      syncExamples: z
        .number()
        .int()
        .min(1)
        .max(1 << 20)
        .default(2048),
      maxDelayMs: ms.default(1000),
      /**
       * Flush the weight change as binary16, scaled per tensor: half the flush's bytes. The
       * replica's base moves by what the shard adds, so the rounding error stays in the next
       * flush's change (error feedback): it is delayed, never lost.
       */
      halfFlush: z.boolean().default(false),
    })
    .prefault({}),
  consumer: z
    .object({
      durablePrefix: z
        .string()
        .regex(/^[A-Za-z0-9_-]{1,120}$/)
        .default('freshet-worker'),
      /**
       * How long JetStream waits for an ack before redelivering: what a crashed worker's (or a
       * lost server's) unacked events cost in delay. Messages held longer (a joiner window, a
       * retrying batch) are kept ours with `working()` every third of it.
       */
      ackWaitMs: z.number().int().min(3000).default(30_000),
      maxAckPending: z.number().int().min(1).default(8192),
      /** Long-poll of one fetch (the server requires at least 1 s). */
      fetchExpiresMs: z.number().int().min(1000).default(1000),
      /** Delay before a handed-back batch is redelivered. */
      nakDelayMs: z.number().int().min(0).default(500),
      /**
       * Ack applied events as requests the consumer leader answers, retried until it does
       * (see confirmed-acks.ts). Off, an ack lost with a NATS server means training the event
       * again after the ack wait; on, it costs a round trip per event, off the batch's path.
       */
      confirmAcks: z.boolean().default(true),
    })
    .prefault({}),
  lease: z
    .object({
      heartbeatMs: ms.default(1000),
      /**
       * A lease not renewed for this long is free for another worker (and its owner stops a
       * heartbeat earlier). It must outlive a RAFT election of the KV bucket (4–9 s in
       * nats-server 2.9, after a node is lost) plus a request timeout, or every owner fences
       * itself while one runs; a crashed worker's partitions wait this long for a new owner.
       */
      ttlMs: ms.default(15_000),
    })
    .prefault({}),
  lr: lrScheduleSchema,
  /**
   * The impression–feedback joiner, one per leased partition (see joiner-options.ts). Its
   * `windowMs`, `orphanWaitMs` and state bounds also size the consumers (see compileWorkerOptions).
   */
  joiner: joinerOptionsSchema.prefault({}),
  /** How the joiner's event clock follows wall time on a caught-up partition. */
  joinClock: z
    .object({
      /** Period of the timer that closes attribution windows (emits negatives). */
      everyMs: ms.default(250),
      /**
       * Windows are closed at `now - lagMs`, not `now`: publishers' clocks and in-flight events
       * may trail the worker's clock a little.
       */
      lagMs: z.number().int().min(0).default(1000),
    })
    .prefault({}),
  /** Inbound event validation (timestamps are checked against the worker's clock). */
  validation: z
    .object({
      /** How far an event may be ahead of the worker's clock. */
      maxSkewMs: z
        .number()
        .int()
        .min(0)
        .default(5 * 60_000),
      /** How old an event may be; unset: any age (replays keep their original timestamps). */
      maxAgeMs: z.number().int().min(0).optional(),
    })
    .prefault({}),
  /** The model guard: pins serving when the progressive logloss degrades (docs/model-versions.md). */
  guard: modelGuardSchema,
  metrics: z
    .object({
      /**
       * Examples in the rolling progressive window (status `progressive.windowAuc` and the
       * mergeable `progressiveWindowHistogram`, shown by `freshet status`): a ring of 16 bytes
       * per example, so bounded at 1M (16 MB).
       */
      window: z.number().int().min(10).max(1_000_000).default(10_000),
    })
    .prefault({}),
  /**
   * Batch manifests in the cluster's KV bucket (see batch-manifest.ts): one put per batch,
   * overlapped with its pull and compute, so that a crash between a shard's accept and the acks
   * never applies an example twice. Off only to measure what they cost.
   */
  manifest: z.object({ enabled: z.boolean().default(true) }).prefault({}),
  /**
   * Whose feedback stream to learn from: another cluster's, for a second model trained on the
   * live model's events (docs/multi-model.md). Leases, manifests, shards and status stay this
   * cluster's; the consumers are this cluster's own, on that stream. Default: this cluster.
   */
  feedback: z.object({ cluster: z.string().optional() }).strict().prefault({}),
});
export type WorkerOptionsInput = z.input<typeof workerOptionsSchema>;
export type WorkerOptions = Omit<
  z.infer<typeof workerOptionsSchema>,
  'maxInFlightBatches' | 'overlapPush'
> & {
  id: string;
  maxInFlightBatches: number;
  overlapPush: boolean;
};

/** Validates and compiles worker options once: defaults applied, id assigned, invariants checked. */
export function compileWorkerOptions(input: WorkerOptionsInput): WorkerOptions {
  const r = workerOptionsSchema.safeParse(input);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new FreshetError('CONFIG', `worker options: ${i?.path.join('.') ?? ''} ${i?.message ?? 'invalid'}`);
  }
  const spec = compileModelConfig(r.data.model);
  // `sync` steps (docs/learning-quality.md): one batch per worker per step, its dense gradient
  // summed at the shard; a second batch in flight or a dense replica would break the lockstep
  const sync = spec.spec.tables.some((t) => t.staleness.policy === 'sync');
  const d = r.data;
  if (sync && ((d.maxInFlightBatches ?? 1) > 1 || d.dense.mode === 'replica' || d.denseCacheMaxLag > 0)) {
    throw new FreshetError(
      'CONFIG',
      'the sync staleness policy takes one batch in flight, dense.mode shard and no dense cache',
    );
  }
  const replica = d.dense.mode === 'replica';
  if (d.overlapPush && (sync || replica)) {
    throw new FreshetError(
      'CONFIG',
      `overlapPush does not combine with ${sync ? 'the sync staleness policy' : 'dense.mode replica'}`,
    );
  }
  const o = {
    ...r.data,
    maxInFlightBatches: r.data.maxInFlightBatches ?? 1,
    overlapPush: d.overlapPush ?? !(sync || replica),
  };
  assertClusterName(o.cluster);
  const source = o.feedback.cluster ?? o.cluster;
  assertClusterName(source);
  if (o.lease.ttlMs <= o.lease.heartbeatMs * 2) {
    throw new FreshetError('CONFIG', 'lease.ttlMs must exceed two heartbeats');
  }
  // Every held message (joiner state, buffered, in flight) counts against max_ack_pending: they
  // must all fit, or delivery would stall. (Held messages outlive the ack wait through
  // `working()`, so the ack wait need not cover a joiner window.)
  const consumer = {
    ...o.consumer,
    // on another cluster's stream the durable names carry this cluster's: the live model's
    // workers and this model's never share (or steal acks from) a consumer
    // (compiling compiled options again must not add it twice)
    durablePrefix:
      source === o.cluster || o.consumer.durablePrefix.endsWith(`-${o.cluster}`)
        ? o.consumer.durablePrefix
        : `${o.consumer.durablePrefix}-${o.cluster}`,
    maxAckPending: Math.max(
      o.consumer.maxAckPending,
      o.joiner.maxPending +
        o.joiner.maxOrphans +
        o.maxBufferedEvents +
        o.batch.size * (o.maxInFlightBatches * (o.overlapPush ? 2 : 1) + 1) +
        1024,
    ),
  };
  const id =
    o.id ??
    `w-${hostname()
      .replace(/[^A-Za-z0-9_-]/g, '')
      .slice(0, 24)}-${process.pid}-${randomBytes(3).toString('hex')}`;
  return { ...o, consumer, id, feedback: { cluster: source } };
}
