import { z } from 'zod';
import { assertClusterName, FreshetError } from '@freshet/protocol';

const DAY = 24 * 3600_000;
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
  /** Retention limits; -1 = unlimited. Oldest events are discarded first when a limit is hit. */
  maxAgeMs: z
    .number()
    .int()
    .min(0)
    .default(7 * DAY),
  maxBytes: limit.default(-1),
  maxMsgs: limit.default(-1),
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
export type StreamOptions = Readonly<z.infer<typeof streamOptionsSchema>>;

/** Validates and applies defaults; bad options throw a CONFIG FreshetError. */
export function compileStreamOptions(input: StreamOptionsInput): StreamOptions {
  const r = streamOptionsSchema.safeParse(input);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new FreshetError('CONFIG', `stream options: ${i?.path.join('.')}: ${i?.message}`);
  }
  assertClusterName(r.data.cluster);
  return Object.freeze(r.data);
}
