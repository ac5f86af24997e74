/**
 * Progressive-validation metrics in a form that adds up across workers, so `freshet status`, the
 * dashboard and the benches can report one cluster-wide AUC and logloss from the workers' status.
 */

/** AUC from score histograms of positives and negatives (pairs within a bin count one half). */
export function histogramAuc(pos: Float64Array, neg: Float64Array): number {
  let negBelow = 0;
  let num = 0;
  let nPos = 0;
  for (let b = 0; b < pos.length; b++) {
    const p = pos[b]!;
    const q = neg[b]!;
    num += p * (negBelow + q / 2);
    negBelow += q;
    nPos += p;
  }
  if (nPos === 0 || negBelow === 0) return Number.NaN;
  return num / (nPos * negBelow);
}

/**
 * Progressive metrics in a form that adds up across workers: weighted score histograms by label
 * (coarsened to `bins` equal-width bins over [0, 1], zero bins left out) and loss sums. Merge with
 * {@link mergeProgressive}; AUC from the coarse histogram is within ~1/bins of the fine one.
 */
export interface ProgressiveHistogram {
  bins: number;
  /** [bin, positive weight, negative weight] for every non-empty bin, ascending. */
  counts: [number, number, number][];
  lossSum: number;
  weightSum: number;
  examples: number;
}

/** Merges mergeable metrics of several workers into cluster-wide AUC and logloss. */
export function mergeProgressive(parts: readonly ProgressiveHistogram[]): {
  examples: number;
  auc: number;
  logloss: number;
} {
  const bins = parts.reduce((m, p) => Math.max(m, p.bins), 1);
  const pos = new Float64Array(bins);
  const neg = new Float64Array(bins);
  let lossSum = 0;
  let weightSum = 0;
  let examples = 0;
  for (const p of parts) {
    // histograms of different resolutions are mapped onto the finest one by bin start
    const f = bins / p.bins;
    for (const [b, np, nn] of p.counts) {
      const i = Math.min(bins - 1, Math.floor(b * f));
      pos[i] = pos[i]! + np;
      neg[i] = neg[i]! + nn;
    }
    lossSum += p.lossSum;
    weightSum += p.weightSum;
    examples += p.examples;
  }
  return {
    examples,
    auc: histogramAuc(pos, neg),
    logloss: weightSum > 0 ? lossSum / weightSum : Number.NaN,
  };
}
