/**
 * The only place where POSIX signals become cancellation: an AbortSignal that fires on the first
 * SIGINT/SIGTERM. A second signal forces exit, for the operator whose clean shutdown hangs.
 */
export function shutdownSignal(onFirst?: (sig: NodeJS.Signals) => void): AbortSignal {
  const ac = new AbortController();
  let count = 0;
  const handler = (sig: NodeJS.Signals) => {
    count++;
    if (count === 1) {
      onFirst?.(sig);
      ac.abort(new Error(`received ${sig}`));
    } else {
      process.stderr.write(`\n[freshet] second ${sig}: exiting now\n`);
      process.exit(130);
    }
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return ac.signal;
}

/** Resolves when the signal aborts. */
export function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
