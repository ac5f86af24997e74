import { exactAuc } from '@freshet/worker';

/** How a learner did around a drift, from its progressive predictions in stream order. */
export interface DriftMetrics {
  /** AUC of the last window that ends at the drift. */
  pre_auc: number;
  /** Lowest AUC of the windows that end after the drift. */
  min_auc: number;
  /**
   * Examples after the drift until the end of the first window that lies wholly after it with
   * an AUC within `tolerance` of `pre_auc` (null: never). At least `window` by construction.
   */
  recovery_events: number | null;
  /** AUC of the last window of the stream. */
  final_auc: number;
}

/** Rolling AUC of windows of `window` examples ending every `step` examples. */
export function rollingAuc(
  preds: ArrayLike<number>,
  labels: ArrayLike<number>,
  window: number,
  step: number,
): { end: number; auc: number }[] {
  const out: { end: number; auc: number }[] = [];
  const n = preds.length;
  for (let end = window; end <= n; end += step) {
    const p = Array.prototype.slice.call(preds, end - window, end) as number[];
    const l = Array.prototype.slice.call(labels, end - window, end) as number[];
    out.push({ end, auc: exactAuc(p, l) });
  }
  return out;
}

/**
 * Pre-drift, worst, recovery and final AUC of a prediction stream whose drift happens at
 * example `driftAt` (windows of `window` examples every `step`).
 */
export function driftMetrics(
  preds: ArrayLike<number>,
  labels: ArrayLike<number>,
  driftAt: number,
  o: { window?: number; step?: number; tolerance?: number } = {},
): DriftMetrics {
  const window = o.window ?? 4000;
  const step = o.step ?? 500;
  const tolerance = o.tolerance ?? 0.02;
  const n = preds.length;
  const auc = (from: number, to: number) =>
    exactAuc(
      Array.prototype.slice.call(preds, Math.max(0, from), to) as number[],
      Array.prototype.slice.call(labels, Math.max(0, from), to) as number[],
    );
  const pre = auc(driftAt - window, driftAt);
  let min = Number.POSITIVE_INFINITY;
  let recovery: number | null = null;
  for (let end = driftAt + step; end <= n; end += step) {
    const a = auc(end - window, end);
    if (a < min) min = a;
    if (recovery === null && end - window >= driftAt && a >= pre - tolerance) recovery = end - driftAt;
  }
  const r4 = (x: number) => Math.round(x * 10_000) / 10_000;
  return {
    pre_auc: r4(pre),
    min_auc: r4(min),
    recovery_events: recovery,
    final_auc: r4(auc(n - window, n)),
  };
}
