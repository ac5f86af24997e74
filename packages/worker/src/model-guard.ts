import { z } from 'zod';

/**
 * The model guard (docs/model-versions.md): compares the mean progressive logloss of each
 * window of `windowExamples` examples with the mean of the `baselineWindows` windows before it.
 * A window worse than the baseline by more than both bounds trips the guard; the worker then
 * writes the cluster's model pin, and serving keeps the weights it has. Progressive loss is
 * measured before training on each example, so a rise is how the live model does on new traffic.
 */
export const modelGuardSchema = z
  .object({
    enabled: z.boolean().default(false),
    /** Examples per window (this worker's; every worker guards its own share). */
    windowExamples: z.number().int().min(10).default(5_000),
    /** Windows the baseline averages; none is tested until that many are seen. */
    baselineWindows: z.number().int().min(1).max(100).default(3),
    /** Relative rise over the baseline that trips it (0.25: 25 % worse). */
    maxRise: z.number().positive().default(0.25),
    /** Absolute rise below which it never trips (noise on a very low loss). */
    minRise: z.number().min(0).default(0.02),
  })
  .prefault({});
export type ModelGuardOptions = z.infer<typeof modelGuardSchema>;

/** What a trip reports. */
export interface GuardTrip {
  at: number;
  logloss: number;
  baseline: number;
  reason: string;
}

/** Guard state for the worker's status. */
export interface ModelGuardStatus {
  enabled: boolean;
  trips: number;
  /** Mean logloss of the baseline windows (null until it has them all). */
  baseline: number | null;
  /** Mean logloss of the last complete window. */
  lastWindow: number | null;
  lastTrip: GuardTrip | null;
}

/** The windowed comparison; `onTrip` is called once per window that trips it. */
export class ModelGuard {
  private windows: number[] = [];
  private sum = 0;
  private n = 0;
  private trips = 0;
  private lastWindow: number | null = null;
  private lastTrip: GuardTrip | null = null;

  constructor(
    private readonly o: ModelGuardOptions,
    private readonly onTrip: (t: GuardTrip) => void,
  ) {}

  /** Adds a batch: its mean logloss over `n` examples. */
  observe(meanLoss: number, n: number): void {
    if (!this.o.enabled || n <= 0 || !Number.isFinite(meanLoss)) return;
    this.sum += meanLoss * n;
    this.n += n;
    if (this.n < this.o.windowExamples) return;
    const mean = this.sum / this.n;
    this.sum = 0;
    this.n = 0;
    this.lastWindow = mean;
    const baseline = this.baseline();
    if (baseline !== null && mean > baseline * (1 + this.o.maxRise) && mean - baseline > this.o.minRise) {
      this.trips++;
      this.lastTrip = {
        at: Date.now(),
        logloss: mean,
        baseline,
        reason:
          `progressive logloss ${mean.toFixed(4)} over the last ${this.o.windowExamples} examples, ` +
          `baseline ${baseline.toFixed(4)} (+${((mean / baseline - 1) * 100).toFixed(0)} %, bound ` +
          `+${(this.o.maxRise * 100).toFixed(0)} %)`,
      };
      // a new baseline from here: an operator who unpins accepts the model as it is now
      this.windows = [];
      this.onTrip(this.lastTrip);
      return;
    }
    this.windows.push(mean);
    if (this.windows.length > this.o.baselineWindows) this.windows.shift();
  }

  private baseline(): number | null {
    if (this.windows.length < this.o.baselineWindows) return null;
    return this.windows.reduce((a, b) => a + b, 0) / this.windows.length;
  }

  status(): ModelGuardStatus {
    return {
      enabled: this.o.enabled,
      trips: this.trips,
      baseline: this.baseline(),
      lastWindow: this.lastWindow,
      lastTrip: this.lastTrip,
    };
  }
}
