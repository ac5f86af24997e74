import type { RowStore } from '../row-store.js';
import { scaledClip, type RowUpdate } from './row-grad.js';

export interface AdagradHyper {
  lr: number;
  initialAccumulator: number;
  eps: number;
}

/** Adagrad keeps one accumulator per coordinate. */
export const adagradStateDim = (dim: number) => dim;

/** A new row's accumulator starts at `initialAccumulator` (as in TF/PyTorch). */
export function adagradInitRow(f: Float32Array, valueOffset: number, dim: number, h: AdagradHyper): void {
  f.fill(h.initialAccumulator, valueOffset + dim, valueOffset + 2 * dim);
}

/** acc ← acc + g²;  w ← w − lr·g / (√acc + ε) */
export function adagradRows(
  store: RowStore,
  rows: Int32Array,
  from: number,
  to: number,
  g: Float32Array,
  h: AdagradHyper,
  u: RowUpdate,
): number {
  const dim = store.dim;
  const lr = h.lr * u.lrScale;
  const eps = h.eps;
  const l2 = u.l2;
  let applied = 0;
  for (let i = from; i < to; i++) {
    const r = rows[i]!;
    if (r < 0) continue;
    const f = store.chunkF(r);
    const o = store.valueOffset(r);
    store.bumpStep(r);
    const go = i * dim;
    const cs = scaledClip(g, go, dim, u);
    const ao = o + dim;
    for (let k = 0; k < dim; k++) {
      const w = f[o + k]!;
      const gk = g[go + k]! * cs + l2 * w;
      const acc = f[ao + k]! + gk * gk;
      f[ao + k] = acc;
      f[o + k] = w - (lr * gk) / (Math.sqrt(acc) + eps);
    }
    applied++;
  }
  return applied;
}
