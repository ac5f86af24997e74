/** Summary of one stage's time per batch. */
export interface StageTime {
  /** Median over the last `window` batches, ms. */
  p50: number;
  /** 90th percentile over the last `window` batches, ms. */
  p90: number;
  /** Exponential moving average (α = 0.1), ms. */
  ewma: number;
}

/** Per-batch time breakdown the worker reports (main-thread stages and the thread's compute). */
export interface BatchTimingSnapshot {
  batches: number;
  /** Features → batch (hashing, unique keys) on the main thread. */
  encode: StageTime;
  /** One pull per shard, in parallel, until every shard replied. */
  pull: StageTime;
  /** Gradient computation in a piscina thread, queueing included. */
  compute: StageTime;
  /** Pushes to every shard until all accepted (retries included). */
  push: StageTime;
  /** From taking the batch off the buffer to acking its events. */
  total: StageTime;
  /**
   * Batch-manifest KV put, issued when the batch is taken and stored by the first push (its
   * round trip; the push waits only for what is left of it, see `manifestWait`).
   */
  manifest: StageTime;
  /** How long the first push waited for the manifest put to be stored (the exposed cost). */
  manifestWait: StageTime;
}

export type Stage = 'encode' | 'pull' | 'compute' | 'push' | 'total' | 'manifest' | 'manifestWait';
const stages: readonly Stage[] = ['encode', 'pull', 'compute', 'push', 'total', 'manifest', 'manifestWait'];

class StageRing {
  private readonly ring: Float64Array;
  private at = 0;
  private n = 0;
  private avg = Number.NaN;
  constructor(size: number) {
    this.ring = new Float64Array(size);
  }
  add(ms: number): void {
    this.ring[this.at] = ms;
    this.at = (this.at + 1) % this.ring.length;
    if (this.n < this.ring.length) this.n++;
    this.avg = Number.isNaN(this.avg) ? ms : this.avg + 0.1 * (ms - this.avg);
  }
  snapshot(): StageTime {
    if (this.n === 0) return { p50: 0, p90: 0, ewma: 0 };
    const s = this.ring.slice(0, this.n).sort();
    const q = (f: number) => round(s[Math.min(this.n - 1, Math.floor(f * this.n))]!);
    return { p50: q(0.5), p90: q(0.9), ewma: round(this.avg) };
  }
}

const round = (x: number) => Math.round(x * 100) / 100;

/** Rolling per-stage batch timings: bounded (a ring of the last `window` batches per stage). */
export class BatchTiming {
  private readonly rings = new Map<Stage, StageRing>();
  private n = 0;
  constructor(window = 256) {
    for (const s of stages) this.rings.set(s, new StageRing(window));
  }
  /** Records a stage's time of one batch (a stage run twice in a batch, e.g. a STALE round, adds up). */
  add(stage: Stage, ms: number): void {
    this.rings.get(stage)!.add(ms);
    if (stage === 'total') this.n++;
  }
  snapshot(): BatchTimingSnapshot {
    const g = (s: Stage) => this.rings.get(s)!.snapshot();
    return {
      batches: this.n,
      encode: g('encode'),
      pull: g('pull'),
      compute: g('compute'),
      push: g('push'),
      total: g('total'),
      manifest: g('manifest'),
      manifestWait: g('manifestWait'),
    };
  }
}
