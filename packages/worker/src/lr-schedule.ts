import type { LrScheduleOptions } from './worker-options.js';

/**
 * The worker's learning-rate multiplier. Shards own the optimizers and the per-table rates; the
 * worker only scales them per push (`lrScale`), so one schedule covers every table and shards
 * stay stateless about training progress.
 */
export class LrSchedule {
  private seen = 0;
  private plateauScale = 1;
  private windowLoss = 0;
  private windowN = 0;
  private best = Number.POSITIVE_INFINITY;
  private badWindows = 0;
  /** How many times the plateau rule lowered the rate. */
  lowered = 0;

  constructor(private readonly o: LrScheduleOptions) {}

  /** The multiplier for the next push. */
  scale(): number {
    const t = this.seen / this.o.halfLifeExamples;
    let decay = 1;
    if (this.o.decay === 'exponential') decay = Math.pow(0.5, t);
    else if (this.o.decay === 'inverse-sqrt') decay = 1 / Math.sqrt(1 + 3 * t);
    return Math.max(decay * this.plateauScale, 1e-6);
  }

  /** Feeds the progressive (pre-update) loss of a batch of `n` examples. */
  observe(meanLoss: number, n: number): void {
    this.seen += n;
    const p = this.o.plateau;
    if (!p.enabled || !Number.isFinite(meanLoss)) return;
    this.windowLoss += meanLoss * n;
    this.windowN += n;
    if (this.windowN < p.windowExamples) return;
    const loss = this.windowLoss / this.windowN;
    this.windowLoss = 0;
    this.windowN = 0;
    if (loss < this.best * (1 - p.minImprovement)) {
      this.best = loss;
      this.badWindows = 0;
      return;
    }
    if (++this.badWindows >= p.patience && this.plateauScale > p.minScale) {
      this.plateauScale = Math.max(p.minScale, this.plateauScale * p.factor);
      this.badWindows = 0;
      this.lowered++;
    }
  }

  get examples(): number {
    return this.seen;
  }
}
