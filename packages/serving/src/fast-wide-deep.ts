import type { EncodedBatch, ModelLayout } from '@freshet/model';
import { FreshetError } from '@freshet/protocol';

/** Where the forward pass reads its parameters: sparse rows per unique key, dense tensors whole. */
export interface ParamSource {
  /** Rows of a sparse table for the batch's unique keys (u × dim, row-major). */
  rows(table: number, keys: Uint32Array): Float32Array;
  /** A dense table's whole tensor. */
  dense(table: number): Float32Array;
}

/**
 * A hand-written Float32Array forward pass of a wide&deep model for ranking:
 *
 *   logit = MLP(concat(pooled field embeddings, numerics)) + Σ wide weights,   p = σ(logit)
 *
 * Ranking requests share the user and context across all candidates, so every input column that
 * is identical over the batch (a whole field, or a numeric column) enters the first layer once:
 * its product with W₁ is computed for the first example and reused. Per candidate only the item
 * columns cost first-layer work. Results agree with @freshet/model's predict (tested).
 */
export class FastWideDeep {
  private readonly k: number;
  private readonly fields: { slot: number; width: number }[];
  private readonly numericDim: number;
  private readonly layers: { w: number; b: number; in: number; out: number }[];
  private readonly emb: number;
  private readonly wide: number;
  private readonly widest: number;
  // Scratch buffers reused across calls: scoring is synchronous, one batch at a time.
  private base: Float32Array;
  private bufA: Float32Array;
  private bufB: Float32Array;
  private pooled: Float32Array;

  constructor(layout: ModelLayout) {
    if (layout.kind !== 'wide-deep') throw new FreshetError('CONFIG', `no fast path for ${layout.kind}`);
    if (layout.emb === undefined || layout.wide === undefined || layout.mlp.length === 0)
      throw new FreshetError('CONFIG', 'wide-deep layout lacks emb, wide or mlp');
    this.k = layout.embeddingDim;
    this.fields = layout.features.sparse.map((f) => ({ slot: f.slot, width: f.width }));
    this.numericDim = layout.numericDim;
    this.emb = layout.emb;
    this.wide = layout.wide;
    this.layers = layout.mlp.map((l) => ({ w: l.w.table, b: l.b.table, in: l.in, out: l.out }));
    const first = this.layers[0]!;
    if (first.in !== this.fields.length * this.k + this.numericDim)
      throw new FreshetError('CONFIG', `mlp input ${first.in} ≠ fields·k + numerics`);
    if (this.layers[this.layers.length - 1]!.out !== 1)
      throw new FreshetError('CONFIG', 'mlp must end in one unit');
    this.widest = Math.max(...this.layers.map((l) => l.out));
    this.base = new Float32Array(first.out);
    this.bufA = new Float32Array(this.widest);
    this.bufB = new Float32Array(this.widest);
    this.pooled = new Float32Array(this.k);
  }

  /** Probabilities for every example of the batch. */
  predict(batch: EncodedBatch, params: ParamSource): Float32Array {
    const n = batch.size;
    const out = new Float32Array(n);
    const sp = batch.sparse.find((s) => s.table === this.emb);
    const wsp = batch.sparse.find((s) => s.table === this.wide);
    if (!sp || !wsp) throw new FreshetError('BAD_REQUEST', 'batch lacks the emb or wide inputs');
    const embRows = params.rows(this.emb, sp.keys);
    // The encoder gives every sparse table the same keys and slots; reuse the index when it does.
    const wideRows = params.rows(this.wide, wsp.keys);
    const slots = sp.slots;
    const index = sp.index;
    const sw = sp.slotWeights;
    const k = this.k;
    const nd = this.numericDim;
    const num = batch.numeric;
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

    // Shared part of layer 1 and of the wide sum, from example 0.
    const base = this.base;
    base.set(params.dense(L1.b).subarray(0, h1));
    let wideBase = 0;
    this.fields.forEach((f, fi) => {
      if (!fieldShared[fi]) return;
      this.pool(f, 0, index, sw, slots, embRows);
      this.axpyRows(this.pooled, W1, fi * k, h1, base);
      wideBase += this.wideSum(f, 0, index, sw, slots, wideRows);
    });
    for (let c = 0; c < nd; c++) {
      if (!numShared[c]) continue;
      const x = num[c]!;
      if (x !== 0) axpy(x, W1, (this.fields.length * k + c) * h1, h1, base);
    }

    for (let b = 0; b < n; b++) {
      let h = this.bufA;
      h.set(base);
      let wide = wideBase;
      this.fields.forEach((f, fi) => {
        if (fieldShared[fi]) return;
        this.pool(f, b, index, sw, slots, embRows);
        this.axpyRows(this.pooled, W1, fi * k, h1, h);
        wide += this.wideSum(f, b, index, sw, slots, wideRows);
      });
      for (let c = 0; c < nd; c++) {
        if (numShared[c]) continue;
        const x = num[b * nd + c]!;
        if (x !== 0) axpy(x, W1, (this.fields.length * k + c) * h1, h1, h);
      }
      let width = h1;
      for (let li = 1; li < this.layers.length; li++) {
        for (let j = 0; j < width; j++) if (h[j]! < 0) h[j] = 0; // ReLU between layers
        const L = this.layers[li]!;
        const W = params.dense(L.w);
        const next = h === this.bufA ? this.bufB : this.bufA;
        next.set(params.dense(L.b).subarray(0, L.out));
        for (let i = 0; i < L.in; i++) {
          const x = h[i]!;
          if (x !== 0) axpy(x, W, i * L.out, L.out, next);
        }
        h = next;
        width = L.out;
      }
      const logit = h[0]! + wide;
      out[b] = 1 / (1 + Math.exp(-logit));
    }
    return out;
  }

  /** Mean/sum pooling of one field's slots into `this.pooled`. */
  private pool(
    f: { slot: number; width: number },
    b: number,
    index: Int32Array,
    sw: Float32Array | undefined,
    slots: number,
    rows: Float32Array,
  ): void {
    const k = this.k;
    const p = this.pooled;
    p.fill(0);
    for (let s = f.slot; s < f.slot + f.width; s++) {
      const r = index[b * slots + s]!;
      if (r < 0) continue;
      const w = sw ? sw[b * slots + s]! : 1;
      const at = r * k;
      for (let j = 0; j < k; j++) p[j]! += w * rows[at + j]!;
    }
  }

  private wideSum(
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
      if (r < 0) continue;
      acc += (sw ? sw[b * slots + s]! : 1) * rows[r]!;
    }
    return acc;
  }

  /** out += Σ_j x[j] · W[(row0 + j) · width ..] for the k inputs of one field. */
  private axpyRows(x: Float32Array, W: Float32Array, row0: number, width: number, out: Float32Array): void {
    for (let j = 0; j < this.k; j++) {
      const v = x[j]!;
      if (v !== 0) axpy(v, W, (row0 + j) * width, width, out);
    }
  }
}

/** out[0..n) += a · W[at .. at+n): the inner loop of every layer, over contiguous memory. */
function axpy(a: number, W: Float32Array, at: number, n: number, out: Float32Array): void {
  for (let j = 0; j < n; j++) out[j]! += a * W[at + j]!;
}
