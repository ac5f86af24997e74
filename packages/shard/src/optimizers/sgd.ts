import type { RowStore } from '../row-store.js';
import { clipScale, type RowUpdate } from './row-grad.js';

export interface SgdHyper {
  lr: number;
}

/** Plain SGD keeps no state. */
export const sgdStateDim = (_dim: number) => 0;

/** w ← w − lr·g */
export function sgdRows(
  store: RowStore,
  rows: Int32Array,
  from: number,
  to: number,
  g: Float32Array,
  h: SgdHyper,
  u: RowUpdate,
): number {
  const dim = store.dim;
  const lr = h.lr * u.lrScale;
  const l2 = u.l2;
  let applied = 0;
  for (let i = from; i < to; i++) {
    const r = rows[i]!;
    if (r < 0) continue;
    const f = store.chunkF(r);
    const o = store.valueOffset(r);
    store.bumpStep(r);
    const go = i * dim;
    const cs = clipScale(g, go, dim, u.clipNorm);
    for (let k = 0; k < dim; k++) {
      const w = f[o + k]!;
      f[o + k] = w - lr * (g[go + k]! * cs + l2 * w);
    }
    applied++;
  }
  return applied;
}
