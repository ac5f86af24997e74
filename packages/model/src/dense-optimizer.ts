import { FreshetError, type TableSpec } from '@freshet/protocol';

const POW_TABLE = 4096;

/**
 * A dense table's optimizer run by the worker that holds a replica of it (worker option
 * `dense.mode: 'replica'`): the same update the shard's kernels apply to a dense table, in the
 * same float32-state / float64-arithmetic order, so one worker with a replica learns exactly
 * what the shard would have learnt from the same gradients. Its state (moments, accumulators,
 * step) is the worker's own: the shard only receives the weight deltas it produced.
 */
export class DenseOptimizer {
  /** Adam m then v, or Adagrad's accumulator; empty for SGD. */
  private readonly state: Float32Array;
  /** Updates applied (Adam's bias-correction step). */
  steps = 0;
  /** β1^steps and β2^steps as running products. */
  private pow1 = 1;
  private pow2 = 1;
  /**
   * The weights and state before the last update (reused buffers, not copies per batch: the
   * replica updates a 63k-float MLP every batch, and per-batch copies cost more than the update).
   */
  private readonly wBefore: Float32Array;
  private readonly sBefore: Float32Array;
  private powBefore: readonly [number, number] = [1, 1];

  constructor(readonly spec: TableSpec) {
    if (spec.kind !== 'dense') throw new FreshetError('CONFIG', `table ${spec.name} is not dense`);
    const o = spec.optimizer;
    const d = spec.dim;
    if (o.kind === 'ftrl') {
      throw new FreshetError(
        'CONFIG',
        `dense table ${spec.name}: FTRL tables cannot be replicated on workers`,
      );
    }
    this.state = new Float32Array(o.kind === 'adam' ? 2 * d : o.kind === 'adagrad' ? d : 0);
    if (o.kind === 'adagrad') this.state.fill(o.initialAccumulator);
    this.wBefore = new Float32Array(d);
    this.sBefore = new Float32Array(this.state.length);
  }

  /**
   * Takes back the last successful {@link apply} on `w` (the same tensor): w, the state and the
   * step as they were before it. For a batch whose later table refused its update.
   */
  undo(w: Float32Array): void {
    w.set(this.wBefore);
    this.state.set(this.sBefore);
    [this.pow1, this.pow2] = this.powBefore;
    this.steps--;
  }

  /**
   * w ← update(w, g): `g` the mean-loss gradient over `examples` examples, `lrScale` the worker's
   * learning-rate schedule. Throws NON_FINITE_STATE, leaving w and the state as they were, when
   * the update would make either non-finite.
   */
  apply(w: Float32Array, g: Float32Array, lrScale: number, examples: number): void {
    const spec = this.spec;
    const o = spec.optimizer;
    const dim = spec.dim;
    if (w.length !== dim || g.length !== dim) {
      throw new FreshetError('WRONG_LENGTH', `dense table ${spec.name}: ${g.length} floats, expected ${dim}`);
    }
    this.wBefore.set(w);
    this.sBefore.set(this.state);
    this.powBefore = [this.pow1, this.pow2];
    const l2 = spec.l2;
    // x − x is 0 for every finite x and NaN otherwise: one running sum over what was stored
    // (float32, so an overflow shows as ±Infinity) finds a non-finite weight or state.
    let check = 0;
    switch (o.kind) {
      case 'adam': {
        // Same step and the same β^t as the shard's AdamBias table (iterated products below 4096).
        const step = this.steps + 1;
        this.pow1 *= o.beta1;
        this.pow2 *= o.beta2;
        const p1 = step < POW_TABLE ? this.pow1 : Math.pow(o.beta1, step);
        const p2 = step < POW_TABLE ? this.pow2 : Math.pow(o.beta2, step);
        const b1 = o.beta1;
        const b2 = o.beta2;
        const c1 = 1 - b1;
        const c2 = 1 - b2;
        const lr = o.lr * lrScale;
        const st = lr / (1 - p1);
        const sbc2 = 1 / Math.sqrt(1 - p2);
        const cs = spec.clipNorm > 0 ? clipScale(g, spec.clipNorm) : 1;
        const eps = o.eps;
        const m = this.state;
        for (let k = 0; k < dim; k++) {
          const wk = w[k]!;
          const gk = g[k]! * cs + l2 * wk;
          const mk = b1 * m[k]! + c1 * gk;
          const vk = b2 * m[dim + k]! + c2 * gk * gk;
          m[k] = mk;
          m[dim + k] = vk;
          // what the stores keep (float32: an overflow is ±Infinity there), checked without
          // reading them back
          const wn = Math.fround(wk - (st * mk) / (Math.sqrt(vk) * sbc2 + eps));
          w[k] = wn;
          const mf = Math.fround(mk);
          const vf = Math.fround(vk);
          check += wn - wn + (mf - mf) + (vf - vf);
        }
        break;
      }
      case 'adagrad': {
        // per-example hyper-parameters: the summed loss's gradient, as on the shard
        const cs = spec.clipNorm > 0 ? clipScale(g, spec.clipNorm / examples) * examples : examples;
        const lr = o.lr * lrScale;
        const acc = this.state;
        for (let k = 0; k < dim; k++) {
          const wk = w[k]!;
          const gk = g[k]! * cs + l2 * wk;
          const a = acc[k]! + gk * gk;
          acc[k] = a;
          w[k] = wk - (lr * gk) / (Math.sqrt(a) + o.eps);
          check += w[k]! - w[k]! + (acc[k]! - acc[k]!);
        }
        break;
      }
      case 'sgd': {
        const cs = clipScale(g, spec.clipNorm);
        const lr = o.lr * lrScale;
        for (let k = 0; k < dim; k++) {
          const wk = w[k]!;
          w[k] = wk - lr * (g[k]! * cs + l2 * wk);
          check += w[k]! - w[k]!;
        }
        break;
      }
      case 'ftrl':
        throw new FreshetError('CONFIG', `dense table ${spec.name}: FTRL is not replicated`);
    }
    if (check !== 0) {
      w.set(this.wBefore);
      this.state.set(this.sBefore);
      [this.pow1, this.pow2] = this.powBefore;
      throw new FreshetError(
        'NON_FINITE_STATE',
        `dense table ${spec.name}: the update made a weight or its optimizer state non-finite; not applied`,
      );
    }
    this.steps++;
  }
}

/** Factor that brings g's L2 norm to ≤ clipNorm (the shard's clipScale over the whole tensor). */
function clipScale(g: Float32Array, clipNorm: number): number {
  if (clipNorm <= 0) return 1;
  let s = 0;
  for (let i = 0; i < g.length; i++) s += g[i]! * g[i]!;
  const norm = Math.sqrt(s);
  return norm > clipNorm ? clipNorm / norm : 1;
}
