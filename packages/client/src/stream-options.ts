import { z } from 'zod';
import { assertClusterName, FreshetError } from '@freshet/protocol';

const DAY = 24 * 3600_000;
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const limit = z.number().int().min(-1);

/**
 * The feedback stream topology of one cluster: a JetStream stream with one subject per
 * partition, and a dead-letter stream. Compiled once by {@link compileStreamOptions}.
 */
export const streamOptionsSchema = z.object({
  cluster: z.string(),
  /** Feedback partitions; events are routed by `partitionOf(user, partitions)`. */
  partitions: z.number().int().min(1).max(1024).default(8),
  replicas: z.number().int().min(1).max(5).default(1),
  storage: z.enum(['file', 'memory']).default('file'),
  /** Retention limits; -1 = unlimited. */
  maxAgeMs: z
    .number()
    .int()
    .min(0)
    .default(7 * DAY),
  /**
   * Stored bytes at most, per replica. Default 2 GiB for file storage, 256 MiB for memory
   * storage, so a flood of publishes cannot fill a server's disk or memory; size it to a few days
   * of your traffic (a 500-byte event: 2 GiB ≈ 4M events). JetStream reserves it against the
   * server's store limit (`max_file_store`, `max_mem_store`) when the stream is created, so the
   * sum over the streams of a server must fit there (the dead-letter stream reserves 1 GiB more).
   */
  maxBytes: limit.optional(),
  maxMsgs: limit.default(-1),
  /**
   * What a full stream does: `old` drops its oldest events (publishers keep going; events no
   * worker consumed yet are lost if the workers are further behind than the limit); `new` refuses
   * new publishes (publishers see an error and retry; nothing stored is lost). Default `old`, as
   * a live system favours fresh feedback; with `old`, watch the consumers' lag in `freshet status`.
   */
  discard: z.enum(['old', 'new']).default('old'),
  /** Bigger messages are refused by the server; smaller-but-oversize ones are dead-lettered. */
  maxMsgBytes: limit.default(1024 * 1024),
  /** JetStream dedupe window for the `Nats-Msg-Id` (the event id). */
  duplicateWindowMs: z
    .number()
    .int()
    .min(1)
    .default(2 * 60_000),
  deadLetter: z
    .object({
      maxAgeMs: z
        .number()
        .int()
        .min(0)
        .default(14 * DAY),
      maxBytes: limit.default(1024 * 1024 * 1024),
      maxMsgs: limit.default(-1),
    })
    .prefault({}),
});
export type StreamOptionsInput = z.input<typeof streamOptionsSchema>;
export type StreamOptions = Readonly<z.infer<typeof streamOptionsSchema> & { maxBytes: number }>;

/** Validates and applies defaults; bad options throw a CONFIG FreshetError. */
export function compileStreamOptions(input: StreamOptionsInput): StreamOptions {
  const r = streamOptionsSchema.safeParse(input);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new FreshetError('CONFIG', `stream options: ${i?.path.join('.')}: ${i?.message}`);
  }
  assertClusterName(r.data.cluster);
  const maxBytes = r.data.maxBytes ?? (r.data.storage === 'file' ? 2 * GIB : 256 * MIB);
  return Object.freeze({ ...r.data, maxBytes });
}
