import { z } from 'zod';

/**
 * How a bench cluster moves bytes on the bus: where the workers' dense tables learn, binary16
 * rows, and the events' encoding. `bench cluster` and `bench wire` take the same options and
 * report them the same way.
 */
export const busOptionsSchema = z.object({
  /**
   * Where the workers' dense tables learn (worker option `dense.mode`): `shard` pulls and pushes
   * them with every batch, `replica` keeps a copy per worker and flushes its change every
   * `denseSyncExamples` examples.
   */
  dense: z.enum(['shard', 'replica']).default('shard'),
  denseSyncExamples: z
    .number()
    .int()
    .min(1)
    .max(1 << 20)
    .default(2048),
  /**
   * Dense tensors of more than this many floats are split into parts on consecutive shards
   * (model option `densePartFloats`); 0 keeps each whole, on one shard.
   */
  densePartFloats: z.union([z.literal(0), z.number().int().min(64)]).default(0),
  /** Workers pull embedding rows as binary16 (worker option `halfPull`). */
  halfPull: z.boolean().default(false),
  /** Workers push embedding rows' gradients as binary16 (worker option `halfPush`). */
  halfPush: z.boolean().default(false),
  /** Shards publish embedding rows in deltas as binary16 (shard option `halfDeltas`). */
  halfDeltas: z.boolean().default(false),
  /** Dense replica flushes as binary16 with error feedback (worker `dense.halfFlush`). */
  halfFlush: z.boolean().default(false),
  /** Workers push gradients of embedding rows of 4+ values as int8, stochastically rounded (`int8Push`). */
  int8Push: z.boolean().default(false),
  /** Workers pull embedding rows of 4+ values as int8 with a scale per row (worker `int8Pull`). */
  int8Pull: z.boolean().default(false),
  /** Shards publish embedding rows of 4+ values as int8 with a scale per row (shard `int8Deltas`). */
  int8Deltas: z.boolean().default(false),
  /** Pushes name their pull instead of repeating its keys (worker option `pullSessions`). */
  pullSessions: z.boolean().default(true),
  /**
   * Requests to shards of one shard host go as one host message (worker option `hostRouting`);
   * it matters only with shard hosts (`shardHosts`).
   */
  hostRouting: z.boolean().default(true),
  /**
   * A host message waits this long for the parts of the worker's next batches (worker option
   * `hostRouting.lingerMs`); 0: only what is sent in the same turn goes together.
   */
  hostLingerMs: z.number().min(0).max(250).default(0),
  /** A shard host's shards publish their deltas in one message per tick (shard `hostDeltas`). */
  hostDeltas: z.boolean().default(false),
  /**
   * How often shards publish deltas (shard option `deltaIntervalMs`, 5 by default): a longer
   * interval sends a row changed by several batches once, for that much freshness.
   */
  deltaIntervalMs: z.number().min(1).max(60_000).default(5),
  /** How the replay publishes events: JSON (any language's default) or msgpack (fewer bytes). */
  encoding: z.enum(['json', 'msgpack']).default('json'),
  /**
   * The replay compresses each event (zlib) with a dictionary of 2000 sample events taken after
   * the run's own (event-dictionary.ts); workers fetch it from the cluster.
   */
  compressEvents: z.boolean().default(false),
});
export type BusOptions = z.infer<typeof busOptionsSchema>;

/** The bus options of a parsed options object (to hand on to another bench). */
export function busOptionsOf(o: BusOptions): BusOptions {
  // parsing strips every field that is not a bus option (their values are already valid)
  return busOptionsSchema.parse(o);
}

/** The bus options as a bench result reports them. */
export function busReport(o: BusOptions): Record<string, unknown> {
  return {
    dense: o.dense,
    dense_sync_examples: o.dense === 'replica' ? o.denseSyncExamples : null,
    half_flush: o.dense === 'replica' ? o.halfFlush : null,
    dense_part_floats: o.densePartFloats,
    half_pull: o.halfPull,
    half_push: o.halfPush,
    half_deltas: o.halfDeltas,
    int8_pull: o.int8Pull,
    int8_push: o.int8Push,
    int8_deltas: o.int8Deltas,
    pull_sessions: o.pullSessions,
    host_routing: o.hostRouting,
    host_linger_ms: o.hostLingerMs,
    host_deltas: o.hostDeltas,
    delta_interval_ms: o.deltaIntervalMs,
    encoding: o.encoding,
    compress_events: o.compressEvents,
  };
}
