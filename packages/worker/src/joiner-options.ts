import { z } from 'zod';
import { FreshetError } from '@freshet/protocol';

const ms = z.number().min(0);
const count = z.number().int().min(1);

/**
 * Options of the impression–feedback joiner. Compiled once by {@link compileJoinerOptions}; every
 * duration is in milliseconds of event time.
 */
export const joinerOptionsSchema = z.object({
  /** Attribution window: feedback within this long after an impression labels it. */
  windowMs: ms.default(5 * 60_000),
  /**
   * After an impression was emitted as a negative, a click up to this long after the impression is
   * re-inserted as a positive (delayed feedback, see README). 0 disables re-insertion.
   */
  lateWindowMs: ms.default(24 * 3600_000),
  /** A positive that arrives before its impression (out of order) waits this long for it. */
  orphanWaitMs: ms.default(60_000),
  /**
   * How far past this process's wall clock one event may move the joiner's clock. Event time
   * drives the windows (replays of old logs work), but a publisher whose clock runs fast must
   * not close every other user's pending impressions at once: its event counts as `now + lead`.
   */
  maxClockLeadMs: ms.default(1000),
  /** How far before its impression a click may be stamped (client clock skew); earlier is dropped. */
  maxSkewMs: ms.default(60_000),
  /** Event ids remembered for dedupe, and for how long. */
  dedupe: z.object({ maxIds: count.default(500_000), windowMs: ms.default(3600_000) }).prefault({}),
  /** Bounds on state; each overflow is deterministic (oldest first) and counted. */
  maxPending: count.default(100_000),
  maxResolved: count.default(200_000),
  maxOrphans: count.default(20_000),
  /** What happens to the oldest pending impression when `maxPending` is reached. */
  overflow: z.enum(['emit-negative', 'drop']).default('emit-negative'),
  labels: z
    .object({
      /** Dwell at or above this is a positive; shorter dwell says nothing. */
      dwellPositiveMs: ms.default(30_000),
      conversionPositive: z.boolean().default(true),
      /** `binary`: rating ≥ threshold → 1, else 0. `scaled`: rating / ratingMax in [0, 1]. */
      ratingMode: z.enum(['binary', 'scaled']).default('binary'),
      ratingThreshold: z.number().default(4),
      ratingMax: z.number().positive().default(5),
      /** A skip resolves its impression as a negative at once instead of at the window end. */
      skipIsNegative: z.boolean().default(true),
    })
    .prefault({}),
  weights: z
    .object({
      positive: z.number().min(0).default(1),
      negative: z.number().min(0).default(1),
      conversion: z.number().min(0).default(1),
      /** Weight of a re-inserted late positive. */
      latePositive: z.number().min(0).default(1),
    })
    .prefault({}),
  /**
   * Per-user token bucket on positive signals (clicks, conversions, dwell), in event time:
   * a user clicking faster than this is click spam, dropped as RATE_LIMITED.
   */
  rateLimit: z
    .object({
      enabled: z.boolean().default(true),
      positivesPerMinute: z.number().positive().default(60),
      burst: z.number().min(1).default(20),
      /** Users tracked at once (least recently active evicted first). */
      maxUsers: count.default(100_000),
    })
    .prefault({}),
  /** Features the joiner adds to the impression's own features. */
  features: z
    .object({
      /** `user` and `item` as categorical features. */
      ids: z.boolean().default(true),
      /** `position` as a numeric feature (position bias). */
      position: z.boolean().default(true),
      /** The query as lower-cased tokens in `query`. */
      queryTokens: z.boolean().default(true),
      maxQueryTokens: count.default(32),
    })
    .prefault({}),
});
export type JoinerOptionsInput = z.input<typeof joinerOptionsSchema>;
export type JoinerOptions = Readonly<z.infer<typeof joinerOptionsSchema>>;

/** Validates options and applies defaults; bad options throw a CONFIG FreshetError. */
export function compileJoinerOptions(input: JoinerOptionsInput = {}): JoinerOptions {
  const r = joinerOptionsSchema.safeParse(input);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new FreshetError('CONFIG', `joiner options: ${i?.path.join('.')}: ${i?.message}`);
  }
  return Object.freeze(r.data);
}
