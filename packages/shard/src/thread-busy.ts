import type { EventLoopUtilization } from 'node:perf_hooks';

/**
 * The busy share of a host's threads (its own, then each shard thread) over the last window of at
 * least `windowMs`, for its status: which thread is hot, not a total since the start. A thread
 * started again meanwhile (its count restarts at 0) reads 0 for that window.
 */
export class ThreadBusy {
  private last: { at: number; samples: (EventLoopUtilization | undefined)[] } | undefined;
  private shares: number[] = [];

  constructor(
    private readonly sample: () => (EventLoopUtilization | undefined)[],
    private readonly windowMs = 1000,
  ) {}

  /** The shares of the last full window (empty until one has passed). */
  read(now = Date.now()): number[] {
    if (this.last && now - this.last.at < this.windowMs) return this.shares;
    const samples = this.sample();
    const prev = this.last?.samples;
    if (prev)
      this.shares = samples.map((s, i) => {
        const p = prev[i];
        if (!s || !p || s.active < p.active) return 0;
        const span = s.active + s.idle - (p.active + p.idle);
        return span > 0 ? Math.round(((s.active - p.active) / span) * 1000) / 1000 : 0;
      });
    this.last = { at: now, samples };
    return this.shares;
  }
}
