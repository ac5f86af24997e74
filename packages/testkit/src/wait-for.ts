/**
 * Polls `cond` until it returns a truthy value or the deadline passes. Tests wait on conditions,
 * never on fixed sleeps, so they are as fast as the system and fail with a message when it is not.
 */
export async function waitFor<T>(
  cond: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number; message?: string | (() => string) } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      const m = typeof opts.message === 'function' ? opts.message() : (opts.message ?? 'condition');
      const why = lastErr instanceof Error ? ` (last error: ${lastErr.message})` : '';
      throw new Error(`timed out after ${opts.timeoutMs ?? 15_000} ms waiting for ${m}${why}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
  }
}

let counter = 0;
/** A name unique across test files and runs: cluster names, subjects, durable names. */
export function uniqueName(prefix = 't'): string {
  counter++;
  return `${prefix}-${process.pid}-${counter}-${Math.random().toString(36).slice(2, 7)}`;
}
