import { z } from 'zod';

/**
 * Stable error codes. They cross process and thread boundaries inside {@link ErrorEnvelope}s,
 * so existing codes never change meaning; add new ones at the end.
 */
export const errorCodes = [
  'BAD_REQUEST', // malformed message: wrong shape, wrong types
  'BAD_FRAME', // binary frame fails length/shape checks
  'NON_FINITE', // NaN or ±Infinity in a gradient or value
  'UNKNOWN_TABLE',
  'WRONG_LENGTH', // array lengths disagree with the header or the table's dim
  'OVERSIZE', // payload or count over a configured limit
  'STALE', // staleness above the table's bound under the `reject` policy
  'OVERLOADED', // a bounded queue is full; retry later
  'NOT_READY', // actor still starting or restoring
  'SHUTTING_DOWN', // actor draining; retry elsewhere
  'TIMEOUT',
  'UNAVAILABLE', // nobody answers (no responders, connection lost)
  'NOT_OWNER', // key routed to a shard that does not own it (shard map changed)
  'DUPLICATE', // already applied (idempotent retry); treated as success by callers
  'INTERNAL',
  'BAD_EVENT', // a feedback event failed validation (dead-lettered)
  'CONFIG', // invalid options or configuration
  'GRAD_OVERFLOW', // a gradient so large its square overflows float32 (see MAX_ABS_GRADIENT)
  'NON_FINITE_STATE', // applying a finite push made a weight or optimizer state non-finite: rolled back
  'ILLEGAL_STATE', // an actor asked for a transition its state machine forbids (start twice, start after stop)
  'CONFLICT', // a compare-and-set lost to a concurrent change (the shard placement, a lease): read again
  'SESSION_UNKNOWN', // a push named a pull whose keys the shard no longer holds (restart, expiry): send the keys
] as const;

/**
 * The largest gradient value a shard applies: 2^53 ≈ 9.0e15. Its square (8.1e31) fits float32
 * (max 3.4e38) with room for four million of them summed, which is what Adagrad's and FTRL's
 * accumulators do (Adam's second moment is an average: never more than the largest square).
 * A larger gradient could turn that state into +Infinity and freeze its row for good, so a push
 * carrying one is rejected whole (GRAD_OVERFLOW), and workers dead-letter the batch instead.
 */
export const MAX_ABS_GRADIENT = 2 ** 53;

/**
 * Why a set of gradients must not be applied: `NON_FINITE` (NaN, ±Infinity), `GRAD_OVERFLOW`
 * (|g| > {@link MAX_ABS_GRADIENT}), or undefined when every value is fine.
 */
export function gradientProblem(grads: ArrayLike<number>): 'NON_FINITE' | 'GRAD_OVERFLOW' | undefined {
  let overflow = false;
  for (let i = 0; i < grads.length; i++) {
    const a = Math.abs(grads[i]!);
    // NaN fails both comparisons
    if (!(a <= MAX_ABS_GRADIENT)) {
      if (!(a < Infinity)) return 'NON_FINITE';
      overflow = true;
    }
  }
  return overflow ? 'GRAD_OVERFLOW' : undefined;
}

export const errorCodeSchema = z.enum(errorCodes);
export type ErrorCode = z.infer<typeof errorCodeSchema>;

const retryableByDefault: ReadonlySet<ErrorCode> = new Set([
  'STALE',
  'OVERLOADED',
  'NOT_READY',
  'SHUTTING_DOWN',
  'TIMEOUT',
  'UNAVAILABLE',
  'NOT_OWNER',
  'CONFLICT',
]);

export const errorEnvelopeSchema = z.object({
  code: errorCodeSchema,
  message: z.string().max(4096),
  retryable: z.boolean(),
});
/** How an error travels over NATS or between threads. */
export type ErrorEnvelope = z.infer<typeof errorEnvelopeSchema>;

/** The one error class of Freshet: a stable `code` plus whether retrying can help. */
export class FreshetError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options?: { retryable?: boolean; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FreshetError';
    this.code = code;
    this.retryable = options?.retryable ?? retryableByDefault.has(code);
  }

  toEnvelope(): ErrorEnvelope {
    return { code: this.code, message: this.message.slice(0, 4096), retryable: this.retryable };
  }

  static fromEnvelope(e: ErrorEnvelope): FreshetError {
    return new FreshetError(e.code, e.message, { retryable: e.retryable });
  }
}

/** Any thrown value as an envelope; unknown errors become INTERNAL (not retryable). */
export function toErrorEnvelope(err: unknown): ErrorEnvelope {
  if (err instanceof FreshetError) return err.toEnvelope();
  const message = err instanceof Error ? err.message : String(err);
  return { code: 'INTERNAL', message: message.slice(0, 4096), retryable: false };
}

/** True when `err` is a FreshetError with one of `codes`. */
export function hasCode(err: unknown, ...codes: ErrorCode[]): err is FreshetError {
  return err instanceof FreshetError && codes.includes(err.code);
}
