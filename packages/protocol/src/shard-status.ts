import { z } from 'zod';
import { subjects } from './subjects.js';

const timingSchema = z.object({ p50: z.number(), p99: z.number(), mean: z.number(), n: z.number() });

/**
 * Status of one parameter-server shard, as reported in its NATS service API stats (endpoint
 * `status`, field `data`) and answered as JSON on {@link shardStatusSubject}.
 */
export const shardStatusSchema = z.object({
  cluster: z.string(),
  shard: z.number().int().min(0),
  shards: z.number().int().min(1),
  state: z.enum(['created', 'starting', 'running', 'draining', 'stopped', 'failed']),
  model: z.string(),
  rows: z.number().int().min(0),
  bytes: z.number().int().min(0),
  /** Pushes applied (the version pull replies carry). */
  version: z.number().int().min(0),
  /** Row updates per second over the last status interval. */
  updatesPerS: z.number().min(0),
  pushesPerS: z.number().min(0),
  staleness: z.object({
    p50: z.number(),
    p99: z.number(),
    max: z.number(),
    count: z.number(),
    /** Bucket counts: `counts[i]` for τ ≤ `bounds[i]` (above the previous bound), one more above the last. */
    histogram: z.object({ bounds: z.array(z.number()), counts: z.array(z.number()) }).optional(),
  }),
  rejects: z.record(z.string(), z.number()),
  evictions: z.number().int().min(0),
  duplicates: z.number().int().min(0),
  deltaSeq: z.number().int().min(0),
  lastCheckpoint: z
    .object({ at: z.number(), ms: z.number(), bytes: z.number(), segment: z.number(), pauseMs: z.number() })
    .nullable(),
  wal: z
    .object({ segment: z.number(), records: z.number(), groupCommits: z.number(), bytes: z.number() })
    .nullable(),
  /**
   * Recent timings in ms (last 1024 samples each): optimizer apply per push, log write per push
   * (append → durable, group commit included), and delta build + encode + publish per message.
   */
  timings: z.object({ applyMs: timingSchema, walMs: timingSchema, deltaMs: timingSchema }).optional(),
  /**
   * SSP gate (tables with the `ssp` policy): pulls waiting now, waits so far, timeouts, and
   * workers admitted at the current clock (joined or restarted; absent from older shards).
   */
  ssp: z
    .object({ waiting: z.number(), waits: z.number(), timeouts: z.number(), joins: z.number().optional() })
    .optional(),
  /**
   * Synchronous steps (the `sync` policy): steps applied, pushes they summed, steps closed by the
   * step timeout with a worker missing, and the workers the next step waits for.
   */
  sync: z
    .object({ steps: z.number(), pushes: z.number(), timeouts: z.number(), members: z.number() })
    .optional(),
  /**
   * Pull sessions (a push naming its pull instead of repeating the keys): held now (count and
   * bytes), pushes resolved from them, pushes that named one no longer held (sent again with
   * keys), sessions dropped for age or the byte budget. Absent from older shards.
   */
  pullSessions: z
    .object({
      sessions: z.number(),
      bytes: z.number(),
      resolved: z.number(),
      unknown: z.number(),
      dropped: z.number(),
    })
    .optional(),
  tables: z.array(z.object({ t: z.number(), name: z.string(), rows: z.number(), bytes: z.number() })),
});
export type ShardStatus = z.infer<typeof shardStatusSchema>;

/** Request-reply subject answering a shard's status as JSON (also in its service API stats). */
export function shardStatusSubject(cluster: string, shard: number): string {
  return `${subjects(cluster).prefix}.ps.${shard}.status`;
}
