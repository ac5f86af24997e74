import type { RunningStats } from './encoder.js';

/**
 * Combines Welford accumulators of disjoint samples (Chan, Golub & LeVeque's pairwise update):
 * the result is what one accumulator over all the samples would hold. Serving merges the
 * workers' statistics this way, so it standardises with what training saw.
 */
export function mergeRunningStats(
  parts: readonly Readonly<Record<string, RunningStats>>[],
): Record<string, RunningStats> {
  const out: Record<string, RunningStats> = {};
  for (const part of parts) {
    for (const [name, s] of Object.entries(part)) {
      const a = out[name];
      if (!a || a.n === 0) {
        out[name] = { ...s };
        continue;
      }
      const n = a.n + s.n;
      if (s.n === 0) continue;
      const d = s.mean - a.mean;
      out[name] = { n, mean: a.mean + (d * s.n) / n, m2: a.m2 + s.m2 + (d * d * a.n * s.n) / n };
    }
  }
  return out;
}
