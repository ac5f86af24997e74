import { z } from 'zod';
import { assertClusterName, EVENT_DICTIONARY_MAX_BYTES, FreshetError } from '@freshet/protocol';

/** Options of a {@link Publisher}. Compiled once by {@link compilePublisherOptions}. */
export const publisherOptionsSchema = z.object({
  cluster: z.string(),
  /** Must match the stream's partition count (see ensureStream). */
  partitions: z.number().int().min(1).max(1024).default(8),
  /** Publishes awaiting their JetStream ack at once. */
  maxInFlight: z.number().int().min(1).max(65_536).default(512),
  /** Events buffered before `publish` waits (or throws OVERLOADED with `whenFull: 'reject'`). */
  maxBuffered: z.number().int().min(1).default(8192),
  whenFull: z.enum(['wait', 'reject']).default('wait'),
  encoding: z.enum(['json', 'msgpack']).default('json'),
  /**
   * Compress each encoded event (zlib; see @freshet/protocol's event-compression.ts), with a
   * preset `dictionary` (≤ 32 KiB, e.g. `buildEventDictionary` of sample events) that the
   * publisher stores in the cluster's dictionary bucket before it sends its first event.
   */
  compression: z
    .object({
      dictionary: z
        .custom<Uint8Array>((v) => v instanceof Uint8Array, 'a Uint8Array')
        .refine(
          (d) => d.length >= 1 && d.length <= EVENT_DICTIONARY_MAX_BYTES,
          `1 to ${EVENT_DICTIONARY_MAX_BYTES} bytes (zlib's window)`,
        )
        .optional(),
      level: z.number().int().min(1).max(9).default(6),
    })
    .optional(),
  /** Validate each event with the v1 schema before buffering (bad events throw BAD_EVENT). */
  validate: z.boolean().default(true),
  ackTimeoutMs: z.number().int().min(1).default(5_000),
  /** Retries of one event (same message id, so JetStream dedupes a retry that did land). */
  maxRetries: z.number().int().min(0).default(5),
  retryBackoffMs: z.number().int().min(0).default(100),
});
export type PublisherOptionsInput = z.input<typeof publisherOptionsSchema>;
export type PublisherOptions = Readonly<z.infer<typeof publisherOptionsSchema>>;

/** Validates and applies defaults; bad options throw a CONFIG FreshetError. */
export function compilePublisherOptions(input: PublisherOptionsInput): PublisherOptions {
  const r = publisherOptionsSchema.safeParse(input);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new FreshetError('CONFIG', `publisher options: ${i?.path.join('.')}: ${i?.message}`);
  }
  assertClusterName(r.data.cluster);
  return Object.freeze(r.data);
}
