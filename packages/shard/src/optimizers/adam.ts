import { META_WORDS, type RowStore } from '../row-store.js';
import { clipScale, type RowUpdate } from './row-grad.js';

/** Adam hyper-parameters of one table. */
export interface AdamHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
}

/** Adam keeps m and v per coordinate. */
export const adamStateDim = (dim: number) => 2 * dim;

const POW_TABLE = 4096;

/**
 * β^t for t < 4096 precomputed once per table: lazy bias correction needs two powers per row
 * update, and Math.pow costs more than the 16-wide update itself.
 */
export class AdamBias {
  private readonly p1 = new Float64Array(POW_TABLE);
  private readonly p2 = new Float64Array(POW_TABLE);
  constructor(
    readonly beta1: number,
    readonly beta2: number,
  ) {
    let a = 1;
    let b = 1;
    for (let t = 0; t < POW_TABLE; t++) {
      this.p1[t] = a;
      this.p2[t] = b;
      a *= beta1;
      b *= beta2;
    }
  }
  /** 1 − β1^t */
  bc1(t: number): number {
    return 1 - (t < POW_TABLE ? this.p1[t]! : Math.pow(this.beta1, t));
  }
  /** 1 − β2^t */
  bc2(t: number): number {
    return 1 - (t < POW_TABLE ? this.p2[t]! : Math.pow(this.beta2, t));
  }
}

/**
 * Sparse Adam with lazy moments: only the rows a push touches update m and v.
 *   m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  w ← w − lr/bc1 · m / (√v/√bc2 + ε)
 *
 * Bias correction (bc1 = 1 − β1^t, bc2 = 1 − β2^t) takes t from `tableStep`, the table's own
 * push count on this shard, as torch.optim.SparseAdam does with its per-parameter step: a row
 * first seen late in the stream gets a full-size first step (≈ lr·(1−β1)/√(1−β2) ≈ 3.2·lr),
 * which is what makes new users and items useful after a handful of events. With
 * `tableStep` 0 each row's own update count is used instead (the older "per-row" mode): its
 * first step is exactly lr, and measured on a drift stream it adapts about 2× slower.
 *
 * `rows[i]` is the row id of gradient row i (−1: skip, e.g. not admitted).
 */
export function adamRows(
  store: RowStore,
  rows: Int32Array,
  from: number,
  to: number,
  g: Float32Array,
  h: AdamHyper,
  bias: AdamBias,
  u: RowUpdate,
  tableStep = 0,
): number {
  const dim = store.dim;
  const b1 = h.beta1;
  const b2 = h.beta2;
  const c1 = 1 - b1;
  const c2 = 1 - b2;
  const lr = h.lr * u.lrScale;
  const eps = h.eps;
  const l2 = u.l2;
  const clip = u.clipNorm;
  const shift = store.chunkShift;
  const cmask = store.chunkMask;
  const stride = store.stride;
  const fs = store.f;
  const us = store.u;
  const tStep = tableStep > 0 ? lr / bias.bc1(tableStep) : 0;
  const tSbc2 = tableStep > 0 ? 1 / Math.sqrt(bias.bc2(tableStep)) : 0;
  let applied = 0;
  for (let i = from; i < to; i++) {
    const r = rows[i]!;
    if (r < 0) continue;
    const c = r >>> shift;
    const f = fs[c]!;
    const uw = us[c]!;
    const base = (r & cmask) * stride;
    const rowStep = (uw[base + 2] = (uw[base + 2]! + 1) >>> 0);
    const o = base + META_WORDS;
    const step = tableStep > 0 ? tStep : lr / bias.bc1(rowStep);
    const sbc2 = tableStep > 0 ? tSbc2 : 1 / Math.sqrt(bias.bc2(rowStep));
    const go = i * dim;
    const cs = clip > 0 ? clipScale(g, go, dim, clip) : 1;
    const mo = o + dim;
    const vo = o + 2 * dim;
    for (let k = 0; k < dim; k++) {
      const w = f[o + k]!;
      const gk = g[go + k]! * cs + l2 * w;
      const m = b1 * f[mo + k]! + c1 * gk;
      const v = b2 * f[vo + k]! + c2 * gk * gk;
      f[mo + k] = m;
      f[vo + k] = v;
      f[o + k] = w - (step * m) / (Math.sqrt(v) * sbc2 + eps);
    }
    applied++;
  }
  return applied;
}
