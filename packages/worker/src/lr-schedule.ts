import type { LrScheduleOptions } from './worker-options.js';

/**
 * Page-Hinkley change detector on a stream of per-batch mean losses (Page 1954; the form used
 * for concept drift by Gama et al. 2014). The reference is an exponential moving mean, so the
 * fall of the loss while a model learns never counts as a change, and an alarm means the loss
 * now sits above where it recently was by more than `delta` per example, for long enough that
 * the excess passed `threshold` (in loss × examples).
 */
export class PageHinkley {
  private mean = Number.NaN;
  private cum = 0;
  private minCum = 0;
  private sinceReset = 0;

  constructor(private readonly o: LrScheduleOptions['drift']) {}

  /** Feeds a batch of `n` examples with mean loss `loss`; true when a change is detected. */
  observe(loss: number, n: number): boolean {
    const o = this.o;
    this.sinceReset += n;
    if (Number.isNaN(this.mean)) this.mean = loss;
    const excess = (loss - this.mean - o.delta) * n;
    // the moving mean follows the loss: weight n / meanExamples per batch (capped at 1)
    this.mean += Math.min(1, n / o.meanExamples) * (loss - this.mean);
    if (this.sinceReset <= o.warmupExamples) return false;
    this.cum += excess;
    if (this.cum < this.minCum) this.minCum = this.cum;
    if (this.cum - this.minCum <= o.threshold) return false;
    this.reset();
    return true;
  }

  /** Starts over (after an alarm): the next warm-up re-learns the level of the loss. */
  reset(): void {
    this.cum = 0;
    this.minCum = 0;
    this.sinceReset = 0;
    this.mean = Number.NaN;
  }
}

/**
 * The worker's learning-rate multiplier. Shards own the optimizers and the per-table rates; the
 * worker only scales them per push (`lrScale`), so one schedule covers every table and shards
 * stay stateless about training progress.
 *
 * Three parts multiply: a decay by examples seen (off by default), the plateau rule (halves
 * the rate when the progressive loss stops improving) and the drift boost (when
 * {@link PageHinkley} sees the loss jump, the plateau lowering is undone and the rate raised,
 * fading back over `boostExamples`).
 */
export class LrSchedule {
  private seen = 0;
  private plateauScale = 1;
  private windowLoss = 0;
  private windowN = 0;
  private best = Number.POSITIVE_INFINITY;
  private badWindows = 0;
  private readonly detector: PageHinkley;
  /** Examples seen at the last drift alarm (−∞: none). */
  private driftAt = Number.NEGATIVE_INFINITY;
  /** How many times the plateau rule lowered the rate. */
  lowered = 0;
  /** How many times the drift detector fired. */
  drifts = 0;

  constructor(private readonly o: LrScheduleOptions) {
    this.detector = new PageHinkley(o.drift);
  }

  /** The multiplier for the next push. */
  scale(): number {
    const t = this.seen / this.o.halfLifeExamples;
    let decay = 1;
    if (this.o.decay === 'exponential') decay = Math.pow(0.5, t);
    else if (this.o.decay === 'inverse-sqrt') decay = 1 / Math.sqrt(1 + 3 * t);
    return Math.max(decay * this.plateauScale * this.boost(), 1e-6);
  }

  /** The drift boost now: `boost` right after an alarm, fading linearly to 1. */
  private boost(): number {
    const d = this.o.drift;
    const since = this.seen - this.driftAt;
    if (!(since < d.boostExamples)) return 1;
    return 1 + (d.boost - 1) * (1 - since / d.boostExamples);
  }

  /** Feeds the progressive (pre-update) loss of a batch of `n` examples. */
  observe(meanLoss: number, n: number): void {
    this.seen += n;
    if (!Number.isFinite(meanLoss)) return;
    if (this.o.drift.enabled && this.detector.observe(meanLoss, n)) {
      this.drifts++;
      this.driftAt = this.seen;
      // the old world's plateau says nothing about the new one
      this.plateauScale = 1;
      this.best = Number.POSITIVE_INFINITY;
      this.badWindows = 0;
      this.windowLoss = 0;
      this.windowN = 0;
    }
    const p = this.o.plateau;
    if (!p.enabled) return;
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
