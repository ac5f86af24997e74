import * as tf from '@tensorflow/tfjs';
import type { DenseParam, EncodedBatch, ModelLayout } from '@freshet/model';
import { FreshetError, joinTensor } from '@freshet/protocol';

/**
 * How the per-candidate layers multiply: `js` loops over Float32Arrays; `tfjs` hands the (already
 * reduced) matrices to the active TensorFlow.js backend (wasm SIMD: measured ~2× faster for 100
 * candidates, see the README). Small batches always use `js`: a tfjs call costs more than them.
 */
export type GemmKind = 'js' | 'tfjs';
const TFJS_MIN_BATCH = 16;

/** Where the forward pass reads its parameters: sparse rows per unique key, dense tensors whole. */
export interface ParamSource {
  /** Rows of a sparse table for the batch's unique keys (u × dim, row-major). */
  rows(table: number, keys: Uint32Array): Float32Array;
  /** A dense table's whole tensor. */
  dense(table: number): Float32Array;
  /**
   * A number that changes whenever the dense table's values may have changed; lets derived
   * layouts (transposed weights) be cached. Without it they are rebuilt on every call.
   */
  stamp?(table: number): number;
}

interface Layer {
  w: number;
  b: number;
  in: number;
  out: number;
}

/**
 * A hand-written Float32Array forward pass of a wide&deep model for ranking:
 *
 *   logit = MLP(concat(pooled field embeddings, numerics)) + Σ wide weights,   p = σ(logit)
 *
 * Ranking requests share the user and context across all candidates, so every input column that
 * is identical over the batch (a whole field, or a numeric column) enters the first layer once:
 * its product with W₁ is computed for the first example and reused. Per candidate only the
 * varying columns (the item's) cost first-layer work. Layers run as small GEMMs against
 * transposed weights (cached per weights version), four candidates at a time so each weight
 * load feeds four multiply-adds. Results agree with @freshet/model's predict (tested).
 */
export class FastWideDeep {
  private readonly k: number;
  private readonly fields: { slot: number; width: number }[];
  private readonly numericDim: number;
  private readonly layers: Layer[];
  private readonly emb: number;
  private readonly wide: number;
  private readonly transposed = new Map<number, { stamp: number; data: Float32Array }>();
  private readonly tensors = new Map<number, { stamp: number; t: tf.Tensor }>();
  private readonly gemm: GemmKind;
  private readonly parted = new Map<number, DenseParam>();
  private readonly joined = new Map<number, { stamp: number; data: Float32Array }>();
  private w1: { stamp: number; cols: number[]; t: tf.Tensor } | undefined;
  // Scratch buffers reused across calls: scoring is synchronous, one batch at a time.
  private scratch: Float32Array[] = [];

  /** With `gemm: 'tfjs'` the caller has started a tfjs backend (`initBackend` of @freshet/model). */
  constructor(layout: ModelLayout, opts: { gemm?: GemmKind } = {}) {
    this.gemm = opts.gemm ?? 'js';
    if (layout.kind !== 'wide-deep') throw new FreshetError('CONFIG', `no fast path for ${layout.kind}`);
    if (layout.emb === undefined || layout.wide === undefined || layout.mlp.length === 0)
      throw new FreshetError('CONFIG', 'wide-deep layout lacks emb, wide or mlp');
    this.k = layout.embeddingDim;
    this.fields = layout.features.sparse.map((f) => ({ slot: f.slot, width: f.width }));
    this.numericDim = layout.numericDim;
    this.emb = layout.emb;
    this.wide = layout.wide;
    // A layer's tensors go by their first table; partitioned ones are joined by `whole`.
    this.layers = layout.mlp.map((l) => ({ w: l.w.tables[0]!, b: l.b.tables[0]!, in: l.in, out: l.out }));
    for (const l of layout.mlp)
      for (const d of [l.w, l.b]) if (d.tables.length > 1) this.parted.set(d.tables[0]!, d);
    if (this.layers[0]!.in !== this.fields.length * this.k + this.numericDim)
      throw new FreshetError('CONFIG', `mlp input ${this.layers[0]!.in} ≠ fields·k + numerics`);
    if (this.layers[this.layers.length - 1]!.out !== 1)
      throw new FreshetError('CONFIG', 'mlp must end in one unit');
  }

  /** Probabilities for every example of the batch. */
  predict(batch: EncodedBatch, source: ParamSource): Float32Array {
    const params = this.whole(source);
    const n = batch.size;
    const sp = batch.sparse.find((s) => s.table === this.emb);
    const wsp = batch.sparse.find((s) => s.table === this.wide);
    if (!sp || !wsp) throw new FreshetError('BAD_REQUEST', 'batch lacks the emb or wide inputs');
    const embRows = params.rows(this.emb, sp.keys);
    const wideRows = wsp.keys === sp.keys ? undefined : params.rows(this.wide, wsp.keys);
    const wideAll = wideRows ?? params.rows(this.wide, sp.keys);
    const { slots, index } = sp;
    const sw = sp.slotWeights;
    const k = this.k;
    const nd = this.numericDim;
    const num = batch.numeric;
    const F = this.fields.length;
    const L1 = this.layers[0]!;
    const W1 = params.dense(L1.w);
    const h1 = L1.out;

    // Which fields and numeric columns are the same for every example (user, context).
    const fieldShared = this.fields.map((f) => {
      for (let b = 1; b < n; b++)
        for (let s = f.slot; s < f.slot + f.width; s++) {
          if (index[b * slots + s] !== index[s]) return false;
          if (sw && sw[b * slots + s] !== sw[s]) return false;
        }
      return true;
    });
    const numShared: boolean[] = [];
    for (let c = 0; c < nd; c++) {
      let same = true;
      for (let b = 1; b < n && same; b++) if (num[b * nd + c] !== num[c]) same = false;
      numShared.push(same);
    }

    // Layer 1, shared part: bias + W₁ᵀ·x over the shared columns of example 0, computed once.
    const base = this.buf(0, h1);
    base.set(params.dense(L1.b).subarray(0, h1));
    const pooled = this.buf(1, k);
    let wideBase = 0;
    for (let fi = 0; fi < F; fi++) {
      if (!fieldShared[fi]) continue;
      const f = this.fields[fi]!;
      pool(f, 0, index, sw, slots, embRows, k, pooled, 0);
      gemvRows(pooled, k, W1, fi * k, h1, base);
      wideBase += wideSum(f, 0, index, sw, slots, wideAll);
    }
    for (let c = 0; c < nd; c++) if (numShared[c]) axpy(num[c]!, W1, (F * k + c) * h1, h1, base);

    // The varying columns of layer 1: X [n × m] and the matching rows of W₁, transposed [h1 × m].
    const cols: number[] = [];
    for (let fi = 0; fi < F; fi++) if (!fieldShared[fi]) for (let j = 0; j < k; j++) cols.push(fi * k + j);
    for (let c = 0; c < nd; c++) if (!numShared[c]) cols.push(F * k + c);
    const m = cols.length;
    const X = this.buf(2, n * m);
    const wide = this.buf(3, n);
    for (let b = 0; b < n; b++) {
      let at = b * m;
      let w = wideBase;
      for (let fi = 0; fi < F; fi++) {
        if (fieldShared[fi]) continue;
        const f = this.fields[fi]!;
        pool(f, b, index, sw, slots, embRows, k, X, at);
        at += k;
        w += wideSum(f, b, index, sw, slots, wideAll);
      }
      for (let c = 0; c < nd; c++) if (!numShared[c]) X[at++] = num[b * nd + c]!;
      wide[b] = w;
    }
    let H: Float32Array;
    if (this.gemm === 'tfjs' && n >= TFJS_MIN_BATCH && m > 0) {
      const last = this.layers.length - 1;
      // One fused kernel per layer (product + bias + relu): a tfjs op costs ~10 µs of bookkeeping,
      // as much as a small product, so fewer ops is most of the win here.
      // tidy disposes everything made inside except the result, which is disposed once read.
      const result = tf.tidy(() => {
        let h = tf.fused.matMul({
          a: tf.tensor2d(X.subarray(0, n * m), [n, m]),
          b: this.firstLayerTensor(W1, cols, h1, params.stamp?.(L1.w)),
          bias: tf.tensor1d(base.subarray(0, h1)),
          activation: last === 0 ? 'linear' : 'relu',
        });
        for (let li = 1; li <= last; li++) {
          const L = this.layers[li]!;
          h = tf.fused.matMul({
            a: h,
            b: this.tensorOf(L.w, [L.in, L.out], params),
            bias: this.tensorOf(L.b, [L.out], params),
            activation: li === last ? 'linear' : 'relu',
          });
        }
        return h;
      });
      H = result.dataSync() as Float32Array;
      result.dispose();
    } else {
      const W1s = this.buf(4, h1 * m);
      for (let q = 0; q < m; q++) {
        const row = cols[q]! * h1;
        for (let j = 0; j < h1; j++) W1s[j * m + q] = W1[row + j]!;
      }
      H = this.buf(5, n * h1);
      gemmNT(X, n, m, W1s, h1, H, base);
      for (let li = 1; li < this.layers.length; li++) {
        const L = this.layers[li]!;
        relu(H, n * L.in);
        const next = this.buf(li % 2 === 1 ? 6 : 5, n * L.out);
        gemmNT(H, n, L.in, this.transposedOf(L, params), L.out, next, params.dense(L.b));
        H = next;
      }
    }
    const out = new Float32Array(n);
    for (let b = 0; b < n; b++) out[b] = 1 / (1 + Math.exp(-(H[b]! + wide[b]!)));
    return out;
  }

  /**
   * `params` with each partitioned tensor read whole under its first table's id: joined once per
   * change of its parts (stamps only grow, so their sum changes whenever one does).
   */
  private whole(params: ParamSource): ParamSource {
    if (this.parted.size === 0) return params;
    const stampOf = (d: DenseParam): number | undefined => {
      if (!params.stamp) return undefined;
      let sum = 0;
      for (const t of d.tables) sum += params.stamp(t);
      return sum;
    };
    return {
      rows: (table, keys) => params.rows(table, keys),
      dense: (table) => {
        const d = this.parted.get(table);
        if (!d) return params.dense(table);
        const stamp = stampOf(d);
        const hit = this.joined.get(table);
        if (hit && stamp !== undefined && hit.stamp === stamp) return hit.data;
        const data = joinTensor(d, (t) => params.dense(t));
        if (stamp !== undefined) this.joined.set(table, { stamp, data });
        return data;
      },
      ...(params.stamp
        ? {
            stamp: (table: number) => {
              const d = this.parted.get(table);
              return d ? stampOf(d)! : params.stamp!(table);
            },
          }
        : {}),
    };
  }

  /** A dense table as a kept tensor, rebuilt when its values change (disposed then). */
  private tensorOf(table: number, shape: [number] | [number, number], params: ParamSource): tf.Tensor {
    const stamp = params.stamp?.(table);
    // Without a stamp the tensor lives only for the call (the caller's tidy disposes it).
    if (stamp === undefined) return tf.tensor(params.dense(table), shape);
    const hit = this.tensors.get(table);
    if (hit && hit.stamp === stamp) return hit.t;
    hit?.t.dispose();
    const t = tf.keep(tf.tensor(params.dense(table), shape));
    this.tensors.set(table, { stamp, t });
    return t;
  }

  /**
   * The rows of W₁ for the varying columns, [m × h1], as a tensor kept while the weights and the
   * set of varying columns stay the same (requests of one shape hit it every time).
   */
  private firstLayerTensor(
    W1: Float32Array,
    cols: number[],
    h1: number,
    stamp: number | undefined,
  ): tf.Tensor {
    const hit = this.w1;
    if (
      hit &&
      stamp !== undefined &&
      hit.stamp === stamp &&
      hit.cols.length === cols.length &&
      hit.cols.every((c, i) => c === cols[i])
    )
      return hit.t;
    const m = cols.length;
    const W1g = this.buf(4, m * h1);
    for (let q = 0; q < m; q++) W1g.set(W1.subarray(cols[q]! * h1, (cols[q]! + 1) * h1), q * h1);
    const t = tf.tensor2d(W1g.subarray(0, m * h1), [m, h1]);
    // Without a stamp the tensor lives only for the call (the caller's tidy disposes it).
    if (stamp === undefined) return t;
    hit?.t.dispose();
    this.w1 = { stamp, cols: [...cols], t: tf.keep(t) };
    return t;
  }

  /** Releases the tensors kept for the tfjs path. */
  dispose(): void {
    for (const { t } of this.tensors.values()) t.dispose();
    this.tensors.clear();
    this.w1?.t.dispose();
    this.w1 = undefined;
  }

  /** A layer's weights as [out × in] (rows contiguous per output unit), cached per version. */
  private transposedOf(L: Layer, params: ParamSource): Float32Array {
    const stamp = params.stamp?.(L.w);
    const hit = this.transposed.get(L.w);
    if (hit && stamp !== undefined && hit.stamp === stamp) return hit.data;
    const W = params.dense(L.w);
    const t = hit?.data ?? new Float32Array(L.in * L.out);
    for (let i = 0; i < L.in; i++) for (let j = 0; j < L.out; j++) t[j * L.in + i] = W[i * L.out + j]!;
    if (stamp !== undefined) this.transposed.set(L.w, { stamp, data: t });
    return t;
  }

  private buf(i: number, n: number): Float32Array {
    let b = this.scratch[i];
    if (!b || b.length < n) {
      b = new Float32Array(Math.max(n, 64));
      this.scratch[i] = b;
    }
    return b;
  }
}

/** Pools one field's slots (weighted sum) of example b into out[at .. at+k). */
function pool(
  f: { slot: number; width: number },
  b: number,
  index: Int32Array,
  sw: Float32Array | undefined,
  slots: number,
  rows: Float32Array,
  k: number,
  out: Float32Array,
  at: number,
): void {
  out.fill(0, at, at + k);
  for (let s = f.slot; s < f.slot + f.width; s++) {
    const r = index[b * slots + s]!;
    if (r < 0) continue;
    const w = sw ? sw[b * slots + s]! : 1;
    const src = r * k;
    for (let j = 0; j < k; j++) out[at + j]! += w * rows[src + j]!;
  }
}

function wideSum(
  f: { slot: number; width: number },
  b: number,
  index: Int32Array,
  sw: Float32Array | undefined,
  slots: number,
  rows: Float32Array,
): number {
  let acc = 0;
  for (let s = f.slot; s < f.slot + f.width; s++) {
    const r = index[b * slots + s]!;
    if (r >= 0) acc += (sw ? sw[b * slots + s]! : 1) * rows[r]!;
  }
  return acc;
}

/**
 * out[0..h) += Σ_i x[i] · W[row0 + i, :] for i < nx (W row-major with h columns): four rows per
 * pass, so each `out` element is loaded and stored once per four rows instead of once per row.
 */
function gemvRows(
  x: Float32Array,
  nx: number,
  W: Float32Array,
  row0: number,
  h: number,
  out: Float32Array,
): void {
  let i = 0;
  for (; i + 4 <= nx; i += 4) {
    const a0 = x[i]!;
    const a1 = x[i + 1]!;
    const a2 = x[i + 2]!;
    const a3 = x[i + 3]!;
    const r0 = (row0 + i) * h;
    const r1 = r0 + h;
    const r2 = r1 + h;
    const r3 = r2 + h;
    for (let j = 0; j < h; j++)
      out[j]! += a0 * W[r0 + j]! + a1 * W[r1 + j]! + a2 * W[r2 + j]! + a3 * W[r3 + j]!;
  }
  for (; i < nx; i++) axpy(x[i]!, W, (row0 + i) * h, h, out);
}

/** out[0..n) += a · W[at .. at+n). */
function axpy(a: number, W: Float32Array, at: number, n: number, out: Float32Array): void {
  if (a === 0) return;
  for (let j = 0; j < n; j++) out[j]! += a * W[at + j]!;
}

function relu(x: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) if (x[i]! < 0) x[i] = 0;
}

/**
 * C[n × p] = init + A[n × k] · Btᵀ, with Bt [p × k]: dot products over contiguous memory, four
 * rows of A at a time so each weight read feeds four accumulators.
 */
function gemmNT(
  A: Float32Array,
  n: number,
  k: number,
  Bt: Float32Array,
  p: number,
  C: Float32Array,
  init: Float32Array,
): void {
  let b = 0;
  for (; b + 4 <= n; b += 4) {
    const a0 = b * k;
    const a1 = a0 + k;
    const a2 = a1 + k;
    const a3 = a2 + k;
    for (let j = 0; j < p; j++) {
      const w0 = j * k;
      const i0 = init[j]!;
      let s0 = i0;
      let s1 = i0;
      let s2 = i0;
      let s3 = i0;
      for (let i = 0; i < k; i++) {
        const w = Bt[w0 + i]!;
        s0 += A[a0 + i]! * w;
        s1 += A[a1 + i]! * w;
        s2 += A[a2 + i]! * w;
        s3 += A[a3 + i]! * w;
      }
      C[b * p + j] = s0;
      C[(b + 1) * p + j] = s1;
      C[(b + 2) * p + j] = s2;
      C[(b + 3) * p + j] = s3;
    }
  }
  for (; b < n; b++) {
    const a0 = b * k;
    for (let j = 0; j < p; j++) {
      const w0 = j * k;
      let s = init[j]!;
      for (let i = 0; i < k; i++) s += A[a0 + i]! * Bt[w0 + i]!;
      C[b * p + j] = s;
    }
  }
}
