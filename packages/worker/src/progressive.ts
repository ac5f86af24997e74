/**
 * Progressive validation (McMahan et al., KDD'13): every example is scored before it is trained
 * on, so the running metrics are an honest estimate of how the model does on unseen traffic.
 *
 * Cumulative AUC uses a fine histogram of scores (bounded memory for a worker that runs for
 * weeks; histograms also merge across workers); the rolling window keeps its last N examples in
 * a ring and computes the exact AUC by sorting, on demand.
 */

import { histogramAuc, type ProgressiveHistogram } from '@freshet/protocol';

export { histogramAuc, mergeProgressive, type ProgressiveHistogram } from '@freshet/protocol';

const EPS = 1e-7;

/** Exact ROC AUC by sorting, ties counted as one half (the Mann–Whitney U statistic). */
export function exactAuc(preds: ArrayLike<number>, labels: ArrayLike<number>, n = preds.length): number {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => preds[a]! - preds[b]!);
  let pos = 0;
  let rankSumPos = 0;
  let i = 0;
  while (i < n) {
    // a run of tied scores shares the mean of its ranks
    let j = i;
    const p = preds[order[i]!]!;
    while (j + 1 < n && preds[order[j + 1]!] === p) j++;
    const meanRank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) {
      if (labels[order[k]!]! >= 0.5) {
        pos++;
        rankSumPos += meanRank;
      }
    }
    i = j + 1;
  }
  const neg = n - pos;
  if (pos === 0 || neg === 0) return Number.NaN;
  return (rankSumPos - (pos * (pos + 1)) / 2) / (pos * neg);
}

/** Binary cross-entropy of one prediction, clipped like the PyTorch peer. */
export function logloss(p: number, label: number): number {
  const q = Math.min(Math.max(p, EPS), 1 - EPS);
  return -(label * Math.log(q) + (1 - label) * Math.log(1 - q));
}

/** A point-in-time view of the metrics (what the service status reports). */
export interface ProgressiveSnapshot {
  examples: number;
  /** Cumulative AUC over every example seen (histogram, 2^16 bins). */
  auc: number;
  /** Cumulative weighted mean logloss. */
  logloss: number;
  /** Exact AUC over the last `window` examples. */
  windowAuc: number;
  /** Mean logloss over the last `window` examples. */
  windowLogloss: number;
  window: number;
}

/** Running progressive-validation metrics of one worker. */
export class ProgressiveMetrics {
  readonly window: number;
  private readonly bins: number;
  private readonly pos: Float64Array;
  private readonly neg: Float64Array;
  private readonly ringP: Float32Array;
  private readonly ringL: Float32Array;
  private readonly ringLoss: Float64Array;
  private ringAt = 0;
  private ringN = 0;
  private lossSum = 0;
  private weightSum = 0;
  private n = 0;
  private last: ProgressiveSnapshot | undefined;

  constructor(opts: { window?: number; bins?: number } = {}) {
    this.window = opts.window ?? 10_000;
    this.bins = opts.bins ?? 1 << 16;
    this.pos = new Float64Array(this.bins);
    this.neg = new Float64Array(this.bins);
    this.ringP = new Float32Array(this.window);
    this.ringL = new Float32Array(this.window);
    this.ringLoss = new Float64Array(this.window);
  }

  /** Adds a batch of predictions made before training on it. Returns the batch's mean logloss. */
  add(preds: ArrayLike<number>, labels: ArrayLike<number>, weights?: ArrayLike<number>): number {
    let batchLoss = 0;
    let batchW = 0;
    for (let i = 0; i < preds.length; i++) {
      const p = preds[i]!;
      const y = labels[i]!;
      const w = weights?.[i] ?? 1;
      const l = logloss(p, y);
      batchLoss += w * l;
      batchW += w;
      const clipped = Number.isFinite(p) ? Math.min(Math.max(p, 0), 1) : 0.5;
      const b = Math.min(this.bins - 1, Math.floor(clipped * this.bins));
      if (y >= 0.5) this.pos[b] = this.pos[b]! + w;
      else this.neg[b] = this.neg[b]! + w;
      this.ringP[this.ringAt] = p;
      this.ringL[this.ringAt] = y;
      this.ringLoss[this.ringAt] = l;
      this.ringAt = (this.ringAt + 1) % this.window;
      if (this.ringN < this.window) this.ringN++;
    }
    this.lossSum += batchLoss;
    this.weightSum += batchW;
    this.n += preds.length;
    return batchW > 0 ? batchLoss / batchW : 0;
  }

  get examples(): number {
    return this.n;
  }

  /** The cumulative metrics as a mergeable histogram of `bins` bins (a power of two ≤ 2^16). */
  mergeable(bins = 1024): ProgressiveHistogram {
    const k = Math.max(1, Math.floor(this.bins / bins));
    const counts: [number, number, number][] = [];
    for (let b = 0; b * k < this.bins; b++) {
      let np = 0;
      let nn = 0;
      for (let i = b * k; i < (b + 1) * k && i < this.bins; i++) {
        np += this.pos[i]!;
        nn += this.neg[i]!;
      }
      if (np > 0 || nn > 0) counts.push([b, np, nn]);
    }
    return {
      bins: Math.ceil(this.bins / k),
      counts,
      lossSum: this.lossSum,
      weightSum: this.weightSum,
      examples: this.n,
    };
  }

  /**
   * The last `window` examples as a mergeable histogram (unweighted, as the window's exact AUC is):
   * the workers' windows merge into one cluster-wide rolling AUC, where averaging their AUCs would
   * not (one worker's scores may all sit below another's). O(window), computed on demand.
   */
  windowMergeable(bins = 1024): ProgressiveHistogram {
    const pos = new Float64Array(bins);
    const neg = new Float64Array(bins);
    let lossSum = 0;
    for (let i = 0; i < this.ringN; i++) {
      const p = this.ringP[i]!;
      const clipped = Number.isFinite(p) ? Math.min(Math.max(p, 0), 1) : 0.5;
      const b = Math.min(bins - 1, Math.floor(clipped * bins));
      if (this.ringL[i]! >= 0.5) pos[b] = pos[b]! + 1;
      else neg[b] = neg[b]! + 1;
      lossSum += this.ringLoss[i]!;
    }
    const counts: [number, number, number][] = [];
    for (let b = 0; b < bins; b++) if (pos[b]! > 0 || neg[b]! > 0) counts.push([b, pos[b]!, neg[b]!]);
    return { bins, counts, lossSum, weightSum: this.ringN, examples: this.ringN };
  }

  /**
   * The metrics now. Status requests come far more often than batches (a dashboard, a bench
   * polling every 30 ms), and the window's exact AUC sorts the whole window: a snapshot is kept
   * until the next example arrives.
   */
  snapshot(): ProgressiveSnapshot {
    if (this.last?.examples !== this.n) this.last = this.compute();
    return { ...this.last };
  }

  private compute(): ProgressiveSnapshot {
    let wl = 0;
    for (let i = 0; i < this.ringN; i++) wl += this.ringLoss[i]!;
    return {
      examples: this.n,
      auc: histogramAuc(this.pos, this.neg),
      logloss: this.weightSum > 0 ? this.lossSum / this.weightSum : Number.NaN,
      windowAuc: exactAuc(this.ringP, this.ringL, this.ringN),
      windowLogloss: this.ringN > 0 ? wl / this.ringN : Number.NaN,
      window: this.ringN,
    };
  }
}
