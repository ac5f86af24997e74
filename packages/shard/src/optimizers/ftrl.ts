import type { RowStore } from '../row-store.js';
import { scaledClip, type RowUpdate } from './row-grad.js';

export interface FtrlHyper {
  alpha: number;
  beta: number;
  l1: number;
  l2: number;
}

/** FTRL-Proximal keeps z and n per coordinate. */
export const ftrlStateDim = (dim: number) => 2 * dim;

/** The closed-form FTRL-Proximal weight of one coordinate from its z and n. */
export function ftrlWeight(z: number, n: number, h: FtrlHyper): number {
  return Math.abs(z) <= h.l1 ? 0 : -(z - Math.sign(z) * h.l1) / ((h.beta + Math.sqrt(n)) / h.alpha + h.l2);
}

/**
 * Sets z so that the closed-form weight equals the row's initial value (n = 0): a row created
 * with a non-zero init keeps it instead of snapping to 0 at its first update.
 */
export function ftrlInitRow(f: Float32Array, o: number, dim: number, h: FtrlHyper): void {
  const c = h.beta / h.alpha + h.l2;
  for (let k = 0; k < dim; k++) {
    const w = f[o + k]!;
    f[o + dim + k] = w === 0 ? 0 : -w * c - Math.sign(w) * h.l1;
    f[o + 2 * dim + k] = 0;
  }
}

/**
 * FTRL-Proximal (McMahan et al. 2013), per coordinate:
 *   σ = (√(n+g²) − √n)/α;  z ← z + g − σ·w;  n ← n + g²;
 *   w = 0 if |z| ≤ l1, else −(z − sgn(z)·l1) / ((β + √n)/α + l2)
 * Weights are materialised after each update so pulls and deltas read w directly.
 * The staleness `scale` policy scales the gradient (FTRL has no single learning rate).
 */
export function ftrlRows(
  store: RowStore,
  rows: Int32Array,
  from: number,
  to: number,
  g: Float32Array,
  h: FtrlHyper,
  u: RowUpdate,
): number {
  const dim = store.dim;
  const alpha = h.alpha;
  const l2 = u.l2;
  let applied = 0;
  for (let i = from; i < to; i++) {
    const r = rows[i]!;
    if (r < 0) continue;
    const f = store.chunkF(r);
    const o = store.valueOffset(r);
    store.bumpStep(r);
    const go = i * dim;
    const cs = scaledClip(g, go, dim, u) * u.lrScale;
    const zo = o + dim;
    const no = o + 2 * dim;
    for (let k = 0; k < dim; k++) {
      const w = f[o + k]!;
      const gk = g[go + k]! * cs + l2 * w;
      const nOld = f[no + k]!;
      const nNew = nOld + gk * gk;
      const sigma = (Math.sqrt(nNew) - Math.sqrt(nOld)) / alpha;
      const z = f[zo + k]! + gk - sigma * w;
      f[zo + k] = z;
      f[no + k] = nNew;
      f[o + k] = ftrlWeight(z, nNew, h);
    }
    applied++;
  }
  return applied;
}

/**
 * Adds a worker's state deltas (sequential FTRL: per row [Δz × dim][Δn × dim], what its batch's
 * examples added one at a time) and materialises w. A push scaled by s (a stale push under the
 * `scale` policy, the worker's rate schedule) adds s·Δz and s²·Δn: exactly what gradients scaled
 * by s add to the gradient sums, approximately for z's σ·w part. n never goes below 0.
 */
export function ftrlStateRows(
  store: RowStore,
  rows: Int32Array,
  from: number,
  to: number,
  d: Float32Array,
  h: FtrlHyper,
  u: RowUpdate,
): number {
  const dim = store.dim;
  const s = u.lrScale;
  let applied = 0;
  for (let i = from; i < to; i++) {
    const r = rows[i]!;
    if (r < 0) continue;
    const f = store.chunkF(r);
    const o = store.valueOffset(r);
    store.bumpStep(r);
    const go = i * 2 * dim;
    const zo = o + dim;
    const no = o + 2 * dim;
    for (let k = 0; k < dim; k++) {
      const z = f[zo + k]! + s * d[go + k]!;
      const n = Math.max(0, f[no + k]! + s * s * d[go + dim + k]!);
      f[zo + k] = z;
      f[no + k] = n;
      f[o + k] = ftrlWeight(z, n, h);
    }
    applied++;
  }
  return applied;
}
