import type { RowStore } from '../row-store.js';

/**
 * w ← w + Δ: a dense replica's flush, or a warm-start import's embedding rows. The sender's own
 * optimizer already turned its gradients into Δ, so the shard leaves the optimizer state alone
 * and applies no learning rate; deltas of several workers add up as their updates would have.
 */
export function addRows(
  store: RowStore,
  rows: Int32Array,
  from: number,
  to: number,
  d: Float32Array,
): number {
  const dim = store.dim;
  let applied = 0;
  for (let i = from; i < to; i++) {
    const r = rows[i]!;
    if (r < 0) continue;
    const f = store.chunkF(r);
    const o = store.valueOffset(r);
    store.bumpStep(r);
    const go = i * dim;
    for (let k = 0; k < dim; k++) f[o + k] = f[o + k]! + d[go + k]!;
    applied++;
  }
  return applied;
}
