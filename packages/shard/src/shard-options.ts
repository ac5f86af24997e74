import { z } from 'zod';
import { natsOptionsSchema } from '@freshet/nats';
import { assertClusterName, FreshetError, parseModelSpec, type ModelSpec } from '@freshet/protocol';

/** Bounds that keep a shard's memory and work per request finite. */
export const shardLimitsSchema = z.object({
  /** Request payloads above this are rejected with OVERSIZE before decoding. */
  maxPushBytes: z
    .number()
    .int()
    .min(1024)
    .default(32 * 1024 * 1024),
  maxPushRows: z
    .number()
    .int()
    .min(1)
    .default(1 << 20),
  maxPullKeys: z
    .number()
    .int()
    .min(1)
    .default(1 << 20),
  /** Requests handled at once per endpoint; beyond it OVERLOADED. */
  maxInFlight: z.number().int().min(1).default(256),
  /** Values per delta message (stay well under the server's max_payload). */
  maxDeltaBytes: z
    .number()
    .int()
    .min(1024)
    .default(512 * 1024),
  /**
   * Bytes of pulled keys kept for the pushes that follow (a push names its pull instead of
   * repeating the keys: 8 bytes a row). 0 turns it off: pulls are answered without a session
   * and workers send keys. When full the oldest session goes; its push then costs one more
   * round trip (SESSION_UNKNOWN, sent again with keys).
   */
  pullSessionBytes: z
    .number()
    .int()
    .min(0)
    .default(64 * 1024 * 1024),
  /** How long a pull's keys wait for its push (a worker that died never pushes). */
  pullSessionTtlMs: z.number().int().min(100).default(30_000),
  /** Push ids remembered for idempotent retries. */
  recentPushIds: z.number().int().min(16).default(65_536),
  /** Admission sketch counters per row (4 rows, 2 bytes each) for tables with minCount > 1. */
  sketchWidth: z
    .number()
    .int()
    .min(16)
    .default(1 << 18),
  /**
   * Admission sketch counts halve every this many ms (0: never), so an id must be seen about
   * `minCount` times within a period or two to get a row, and ids seen long ago stop counting.
   * Default 1 h: longer than a user session, short enough that a month of one-off ids does not
   * add up. Checked on each push of the table (the halving itself is ~1 ms at the default width).
   */
  sketchDecayMs: z.number().int().min(0).default(3_600_000),
  /** SSP: longest wait of a pull for slower workers, and how long an unseen worker counts as live. */
  sspTimeoutMs: z.number().int().min(1).default(10_000),
  sspLiveMs: z.number().int().min(1).default(10_000),
  /**
   * The `sync` policy: a step closes this long after it opened even when a worker of the last
   * step has not pushed (it died, stopped or ran out of events): it stalls the others once, then
   * is no longer waited for. Below the workers' request timeout (5 s), or they retry meanwhile.
   */
  syncStepTimeoutMs: z.number().int().min(1).default(1000),
  /** DC-ASGD backups: workers remembered and rows per pull kept. */
  dcMaxWorkers: z.number().int().min(1).default(64),
  dcMaxRowsPerWorker: z
    .number()
    .int()
    .min(1)
    .default(1 << 18),
  /** Rows scanned for expiry per table per eviction tick. */
  evictScanRows: z
    .number()
    .int()
    .min(1)
    .default(1 << 16),
});

/**
 * Where checkpoints go besides the data dir (docs/checkpoints.md). `dir`: the data dir only (a
 * shard restarts where its volume is). `object-store`: each checkpoint is also uploaded, in the
 * background, to the cluster's JetStream Object Store bucket, the newest `keep` kept per shard,
 * and a shard whose data dir is empty (a new host) restores from there.
 */
export const shardCheckpointSchema = z
  .object({
    store: z.enum(['dir', 'object-store']).default('dir'),
    /** Checkpoints kept per shard in the Object Store (the data dir keeps its newest only). */
    keep: z.number().int().min(1).default(3),
    /** Bucket; default `subjects(cluster).objectStore` (what `freshet init` and NATS auth name). */
    bucket: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ and - only')
      .optional(),
    /** Replicas of the bucket when the shard creates it (like the stream's on a NATS cluster). */
    replicas: z.number().int().min(1).max(5).default(1),
    /**
     * With `object-store`: seal the log segment this often (when it holds anything) and upload
     * it, so a shard restored elsewhere after a crash loses at most about this much, not
     * everything since the last checkpoint. 0: only checkpoints are uploaded.
     */
    walSegmentMs: z.number().int().min(0).default(10_000),
  })
  .strict();

/** Options of one shard process. */
export const shardOptionsSchema = z
  .object({
    cluster: z.string().min(1),
    shard: z.number().int().min(0),
    shards: z.number().int().min(1),
    nats: natsOptionsSchema.prefault({}),
    /** The model spec; when absent it is read from the cluster's KV bucket, key `model-spec`. */
    model: z.unknown().optional(),
    /**
     * How long to wait for `model-spec` to appear in KV; 0 (default) waits until stopped, since
     * roles may start before `freshet init` and a crash loop would only hide why.
     */
    modelWaitMs: z.number().int().min(0).default(0),
    /** How often a waiting shard says what it waits for. */
    modelWaitLogMs: z.number().int().min(1).default(10_000),
    /** Write-ahead log and checkpoints; without it the shard is memory-only (no crash guarantee). */
    dataDir: z.string().min(1).optional(),
    /**
     * fdatasync each group commit and checkpoint. On by default: with one copy of the data (no
     * replica of the shard) it is what makes an acknowledged push survive a host power loss or
     * kernel crash; kill -9 is survived either way. Cost measured here (ext4 on virtio, 2 vCPUs):
     * a 608 KB frame p50 0.11 → 0.75 ms, a 4 KB frame 0.03 → 0.25 ms; 138 vs 198 pushes/s of
     * 4096 rows through NATS (README). Off only where the host's storage is battery-backed or the
     * data can be replayed from the stream.
     */
    fsync: z.boolean().default(true),
    deltaIntervalMs: z.number().min(1).default(5),
    /**
     * Sizes the delta interval by the cluster: a serving node that holds the whole model receives
     * every shard's deltas, so at 5 ms each, 500 shards would send it 100k messages/s. With this
     * budget each of `shards` shards publishes at most every shards / budget seconds (never more
     * often than `deltaIntervalMs`, never less often than `deltaMaxIntervalMs`): a serving node
     * receives about `budget` delta messages per second in all, whatever the shard count, and
     * each message carries more rows (a row changed twice in the window travels once). Unset:
     * every `deltaIntervalMs`. With `servingSlices` a node hears ceil(shards / servingSlices)
     * shards, and that count is what is sized. See {@link deltaIntervalOf}.
     */
    deltaMsgsPerServingNode: z.number().positive().optional(),
    /** The longest interval the budget may stretch to: the freshness it may cost. */
    deltaMaxIntervalMs: z.number().min(1).default(250),
    /**
     * Embedding rows in deltas as binary16: half the bytes every serving node receives. Deltas
     * carry values, not increments, so the rounding (11 significant bits) never accumulates;
     * dense tensors and snapshots stay float32.
     */
    halfDeltas: z.boolean().default(false),
    /**
     * Embedding rows in deltas as int8 with a bfloat16 scale per row (dim + 2 bytes a row; rows
     * narrower than 4 values as binary16): about half of `halfDeltas`' bytes for wide rows. Each
     * value is within half a step (1/254) of its row's largest; values, not increments, so it
     * never accumulates. Dense tensors go as binary16 with it. Serving nodes of this version
     * decode it; older ones refuse the delta.
     */
    int8Deltas: z.boolean().default(false),
    /**
     * Run by a shard host: the host's shards publish their deltas together, one message per host
     * per tick (`hdelta.<host>`) instead of one per shard. Serving nodes of this version read
     * them; older ones see only the shards' own subjects, so upgrade serving first. A standalone
     * shard ignores it.
     */
    hostDeltas: z.boolean().default(false),
    /**
     * How many slices the serving tier holds the model in (serving option `slice`: the node of
     * slice i of n holds the shards s with s % n = i). With `hostDeltas`, a shard host splits each
     * tick's message by slice, onto `hdelta.<host>.<n>.<i>`, so a sliced serving node receives
     * only its own shards' parts: about 1/n of the bytes and parts it would otherwise receive and
     * drop. Whole-model nodes hear both forms. Serving nodes must be of this version: older ones
     * subscribe to `hdelta.*`, which matches `hdelta.<host>` only, and would miss the per-slice
     * messages, so upgrade serving first. It also sizes the `deltaMsgsPerServingNode` budget: a sliced node hears from
     * ceil(shards / n) shards, not all of them. Without `hostDeltas` that budget is its only
     * effect (each shard publishes on its own subject either way). It must match the serving
     * tier's slice count: another count puts a host's messages on subjects no sliced node hears.
     */
    servingSlices: z.number().int().min(1).max(4096).default(1),
    /** Periodic checkpoint; 0 disables the timer (the WAL-size trigger still applies). */
    checkpointIntervalMs: z.number().int().min(0).default(60_000),
    /** Checkpoint when the current log segment grows past this. */
    checkpointWalBytes: z
      .number()
      .int()
      .min(1024)
      .default(256 * 1024 * 1024),
    /** Maintenance tick: eviction scan, checkpoint triggers, rate counters. */
    maintenanceIntervalMs: z.number().int().min(10).default(1000),
    /** Reject keys routed to another shard (NOT_OWNER). */
    checkOwnership: z.boolean().default(true),
    limits: shardLimitsSchema.prefault({}),
    checkpoint: shardCheckpointSchema.prefault({}),
  })
  .refine((o) => o.shard < o.shards, { message: 'shard must be < shards' })
  .refine((o) => o.checkpoint.store === 'dir' || o.dataDir !== undefined, {
    message: 'checkpoint.store "object-store" needs a dataDir (checkpoints are written there first)',
    path: ['checkpoint', 'store'],
  });

/**
 * The interval a shard publishes deltas at: `deltaIntervalMs`, stretched by
 * `deltaMsgsPerServingNode` to heard / budget seconds, capped at `deltaMaxIntervalMs`, where heard
 * is the shards one serving node hears from: all of them, or ceil(shards / servingSlices) when
 * serving is sliced (absent `servingSlices` counts as 1).
 */
export function deltaIntervalOf(
  o: Pick<ShardOptions, 'shards' | 'deltaIntervalMs' | 'deltaMsgsPerServingNode' | 'deltaMaxIntervalMs'> &
    Partial<Pick<ShardOptions, 'servingSlices'>>,
): number {
  if (o.deltaMsgsPerServingNode === undefined) return o.deltaIntervalMs;
  const heard = Math.ceil(o.shards / (o.servingSlices ?? 1));
  const sized = (heard / o.deltaMsgsPerServingNode) * 1000;
  return Math.max(o.deltaIntervalMs, Math.min(sized, o.deltaMaxIntervalMs));
}

export type ShardOptionsInput = z.input<typeof shardOptionsSchema>;
/** Compiled options: defaults applied, model parsed when given. */
export type ShardOptions = Omit<z.infer<typeof shardOptionsSchema>, 'model'> & { model?: ModelSpec };

/** Validates shard options once; throws FreshetError CONFIG with the first problem. */
export function compileShardOptions(input: ShardOptionsInput): ShardOptions {
  const r = shardOptionsSchema.safeParse(input);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new FreshetError('CONFIG', `shard options: ${i?.path.join('.') ?? ''} ${i?.message ?? 'invalid'}`);
  }
  assertClusterName(r.data.cluster);
  const { model, ...rest } = r.data;
  if (model === undefined) return rest;
  try {
    return { ...rest, model: parseModelSpec(model) };
  } catch (e) {
    throw new FreshetError('CONFIG', `shard options: model: ${(e as Error).message}`, { cause: e });
  }
}
