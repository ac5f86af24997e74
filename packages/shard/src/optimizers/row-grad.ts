/**
 * Per-row gradient preparation shared by the optimizer kernels: gradient-norm clipping and L2.
 * Kept as a scale factor so kernels read the gradient once, in their own loop.
 */

/** Factor that brings the row gradient g[go .. go+dim) to L2 norm ≤ clipNorm (1 when clipNorm is 0). */
export function clipScale(g: Float32Array, go: number, dim: number, clipNorm: number): number {
  if (clipNorm <= 0) return 1;
  let s = 0;
  for (let i = 0; i < dim; i++) {
    const x = g[go + i]!;
    s += x * x;
  }
  const norm = Math.sqrt(s);
  return norm > clipNorm ? clipNorm / norm : 1;
}

/** Row-kernel hyper-parameters common to every optimizer. */
export interface RowUpdate {
  /** Learning-rate multiplier from the staleness policy (1 / (1 + τ) under `scale`). */
  lrScale: number;
  /** L2 weight decay added to the (clipped) gradient: g + l2·w. */
  l2: number;
  /** Per-row gradient-norm clip; 0 disables. */
  clipNorm: number;
  /**
   * Multiplier turning the push's mean-loss gradient into the summed loss's (its example
   * count) for the optimizers whose hyper-parameters are per example (Adagrad, FTRL); 1 for
   * the others. Clipping applies to the scaled gradient.
   */
  gradScale: number;
}

/** {@link clipScale} of the gradient scaled by `u.gradScale`, times that scale. */
export function scaledClip(g: Float32Array, go: number, dim: number, u: RowUpdate): number {
  const s = u.gradScale;
  return u.clipNorm > 0 ? clipScale(g, go, dim, u.clipNorm / s) * s : s;
}
