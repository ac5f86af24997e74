import * as tf from '@tensorflow/tfjs';
import { FreshetError, joinTensor, splitTensor } from '@freshet/protocol';
import type { BatchRows, EncodedBatch, GradientResult, SparseInput } from './batch.js';
import { activeBackend } from './backend.js';
import { ftrlSequential, isSequentialFtrl } from './ftrl-local.js';
import type { DenseParam, LinearLayer, ModelLayout } from './model-config.js';
import type { Model } from './model.js';

/**
 * Scores a batch then takes the gradient of its weighted mean binary cross-entropy with respect
 * to the batch's unique sparse rows and the dense weights. `preds` are the probabilities scored
 * before any update (progressive validation). Sparse gradients come summed per unique key
 * (u × dim, aligned with `SparseInput.keys`).
 *
 * The graph's sparse inputs are the batch's gathered, slot-weighted rows (B × slots × dim); the
 * gather and the per-key scatter-add of their gradient run in plain JS around the graph. tfjs'
 * own gather gradient needs UnsortedSegmentSum, which the wasm backend lacks, and its wasm
 * GatherV2/ScatterNd take ~7 ms each for a 512 × 26 × 16 batch where the JS loops take < 1 ms.
 * Synchronous; call {@link initBackend} once per thread first.
 */
export function computeGradients(model: Model, batch: EncodedBatch, rows: BatchRows): GradientResult {
  // FTRL on an lr model trains example by example on the pulled state (no graph needed)
  if (isSequentialFtrl(model)) return ftrlSequential(model, batch, rows);
  activeBackend();
  const ids = graphInputs(model, paramTables(model, batch, rows));
  const grads: (Float32Array | undefined)[] = new Array<Float32Array | undefined>(model.spec.tables.length);
  let logitsKept: tf.Tensor | undefined;
  const consts = makeConstants(batch);
  const params = ids.map((id) => paramTensor(model, batch, rows, id));
  try {
    const f = (...xs: tf.Tensor[]): tf.Scalar => {
      const p = new Map<number, tf.Tensor>();
      ids.forEach((id, i) => p.set(id, xs[i]!));
      const logits = forward(model.layout, batch, p, consts);
      logitsKept = tf.keep(logits);
      return bceWithLogits(logits, consts.labels, consts.weights, batch.size);
    };
    const { value, grads: gs } = tf.valueAndGrads(f)(params);
    const loss = value.dataSync()[0]!;
    value.dispose();
    gs.forEach((g, i) => {
      const id = ids[i]!;
      const data = g.dataSync() as Float32Array;
      g.dispose();
      const s = batch.sparse.find((x) => x.table === id);
      if (s) grads[id] = scatterAdd(s, data, model.spec.tables[id]!.dim);
      else splitGrad(model, id, data, grads);
    });
    const preds = tf.tidy(() => tf.sigmoid(logitsKept!)).dataSync() as Float32Array;
    assertFinite(loss, grads, model);
    return { preds, loss, grads };
  } finally {
    params.forEach((t) => t.dispose());
    logitsKept?.dispose();
    disposeConstants(consts);
  }
}

/**
 * A non-finite loss or gradient (overflowing rows, NaN inputs) must never reach a shard: throw
 * `NON_FINITE` naming the first bad table instead of returning it.
 */
function assertFinite(loss: number, grads: (Float32Array | undefined)[], model: Model): void {
  if (!Number.isFinite(loss)) throw new FreshetError('NON_FINITE', `loss is ${loss}`);
  grads.forEach((g, id) => {
    if (!g) return;
    for (let i = 0; i < g.length; i++) {
      if (!Number.isFinite(g[i]!)) {
        throw new FreshetError(
          'NON_FINITE',
          `gradient of table "${model.spec.tables[id]!.name}" is not finite`,
        );
      }
    }
  });
}

/** Predicted probabilities for a batch (no gradients). */
export function predict(model: Model, batch: EncodedBatch, rows: BatchRows): Float32Array {
  activeBackend();
  const ids = graphInputs(model, paramTables(model, batch, rows));
  const consts = makeConstants(batch);
  let out: tf.Tensor | undefined;
  try {
    out = tf.tidy(() => {
      const p = new Map<number, tf.Tensor>();
      for (const id of ids) p.set(id, paramTensor(model, batch, rows, id));
      return tf.sigmoid(forward(model.layout, batch, p, consts));
    });
    // A copy: the tensor's memory is released right after, and serving calls this per request.
    return (out.dataSync() as Float32Array).slice();
  } finally {
    out?.dispose();
    disposeConstants(consts);
  }
}

/** The weighted mean binary cross-entropy of logits (exposed for tests and benchmarks). */
export function logLoss(preds: Float32Array, labels: Float32Array, weights?: Float32Array): number {
  let s = 0;
  let w = 0;
  for (let i = 0; i < preds.length; i++) {
    const p = Math.min(Math.max(preds[i]!, 1e-7), 1 - 1e-7);
    const wi = weights ? weights[i]! : 1;
    s -= wi * (labels[i]! > 0.5 ? Math.log(p) : Math.log(1 - p));
    w += wi;
  }
  return w > 0 ? s / w : 0;
}

interface Constants {
  labels: tf.Tensor1D;
  weights: tf.Tensor1D;
  numeric: tf.Tensor2D;
}

function makeConstants(batch: EncodedBatch): Constants {
  const n = batch.size;
  return {
    labels: tf.tensor1d(batch.labels),
    weights: tf.tensor1d(batch.weights),
    numeric: tf.tensor2d(batch.numeric, [n, batch.numeric.length / n]),
  };
}

function disposeConstants(c: Constants): void {
  c.labels.dispose();
  c.weights.dispose();
  c.numeric.dispose();
}

/** Weight of slot i: its pooling weight, 0 when empty. */
function slotWeight(s: SparseInput, i: number): number {
  return s.index[i]! < 0 ? 0 : s.slotWeights ? s.slotWeights[i]! : 1;
}

/** The slot-weighted rows of every slot (B × slots × dim); empty slots are zeros. */
function gatherRows(s: SparseInput, rows: Float32Array, dim: number): Float32Array {
  const out = new Float32Array(s.index.length * dim);
  for (let i = 0; i < s.index.length; i++) {
    const k = s.index[i]!;
    if (k < 0) continue;
    const w = slotWeight(s, i);
    const from = k * dim;
    const to = i * dim;
    for (let d = 0; d < dim; d++) out[to + d] = w * rows[from + d]!;
  }
  return out;
}

/** Sums the gradient of every slot into its unique key's row: u × dim. */
function scatterAdd(s: SparseInput, slotGrads: Float32Array, dim: number): Float32Array {
  const out = new Float32Array((s.keys.length / 2) * dim);
  for (let i = 0; i < s.index.length; i++) {
    const k = s.index[i]!;
    if (k < 0) continue;
    const w = slotWeight(s, i);
    const from = i * dim;
    const to = k * dim;
    for (let d = 0; d < dim; d++) out[to + d]! += w * slotGrads[from + d]!;
  }
  return out;
}

/** Table ids the batch needs, sparse first then dense, with their rows checked. */
function paramTables(model: Model, batch: EncodedBatch, rows: BatchRows): number[] {
  const ids: number[] = [];
  const tables = model.spec.tables;
  const expectedSparse = model.layout.sparseTables;
  if (
    batch.sparse.length !== expectedSparse.length ||
    batch.sparse.some((s, i) => s.table !== expectedSparse[i])
  ) {
    throw new FreshetError('BAD_REQUEST', 'batch was not encoded for this model (sparse tables differ)');
  }
  if (batch.labels.length !== batch.size || batch.weights.length !== batch.size) {
    throw new FreshetError('WRONG_LENGTH', 'labels/weights length differs from the batch size');
  }
  if (batch.numeric.length !== batch.size * model.layout.numericDim) {
    throw new FreshetError('WRONG_LENGTH', `numeric input must be size × ${model.layout.numericDim}`);
  }
  for (const s of batch.sparse) {
    if (s.index.length !== batch.size * s.slots || s.slots !== model.layout.features.slots) {
      throw new FreshetError(
        'WRONG_LENGTH',
        `table ${s.table}: index must be size × ${model.layout.features.slots}`,
      );
    }
    const u = s.keys.length / 2;
    if (s.keys.length % 2 !== 0 || s.counts.length !== u) {
      throw new FreshetError('WRONG_LENGTH', `table ${s.table}: keys/counts lengths disagree`);
    }
    for (let i = 0; i < s.index.length; i++) {
      if (s.index[i]! >= u)
        throw new FreshetError('BAD_REQUEST', `table ${s.table}: slot index out of range`);
    }
    ids.push(s.table);
  }
  for (const id of model.layout.denseTables) ids.push(id);
  for (const id of ids) {
    const t = tables[id]!;
    const r = rows[id];
    const u = t.kind === 'sparse' ? batch.sparse.find((s) => s.table === id)!.keys.length / 2 : 1;
    if (!r || r.length !== u * t.dim) {
      throw new FreshetError(
        'WRONG_LENGTH',
        `rows of table ${id} ("${t.name}") must hold ${u * t.dim} floats`,
      );
    }
  }
  return ids;
}

/** A graph input: a sparse table's gathered slots [B, slots, dim], or a dense tensor. */
function paramTensor(model: Model, batch: EncodedBatch, rows: BatchRows, id: number): tf.Tensor {
  const t = model.spec.tables[id]!;
  const r = rows[id]!;
  const s = batch.sparse.find((x) => x.table === id);
  if (s) return tf.tensor3d(gatherRows(s, r, t.dim), [batch.size, s.slots, t.dim]);
  const d = denseParamOf(model, id);
  return tf.tensor(d.tables.length === 1 ? r : joinTensor(d, (p) => rows[p]!), d.shape);
}

/**
 * The graph's inputs: every table of the batch, except that a partitioned tensor enters once,
 * joined, under its first part's id. Joining in JS costs a copy; joining in the graph costs a
 * concat and a slice per part on every batch (measured 30% slower with the MLP in 54 parts).
 */
function graphInputs(model: Model, ids: number[]): number[] {
  return ids.filter((id) => {
    const part = model.spec.tables[id]!.part;
    return part === undefined || part.index === 0;
  });
}

function denseParamOf(model: Model, id: number): DenseParam {
  return model.layout.dense.find((p) => p.tables[0] === id)!;
}

/** A dense input's gradient, cut into its parts' tables when partitioned (copies: each is sent on). */
function splitGrad(model: Model, id: number, data: Float32Array, grads: (Float32Array | undefined)[]): void {
  const d = denseParamOf(model, id);
  if (d.tables.length === 1) {
    grads[id] = data;
    return;
  }
  for (const [t, part] of splitTensor(d, data)) grads[t] = part.slice();
}

/** A dense weight tensor of the graph (a partitioned one is joined under its first part's id). */
function dense(d: DenseParam, p: Map<number, tf.Tensor>): tf.Tensor {
  return p.get(d.tables[0]!)!;
}

/** Pooled field embeddings [B, F, dim] of one sparse table. */
function pooled(layout: ModelLayout, s: SparseInput, e: tf.Tensor3D, size: number): tf.Tensor3D {
  const dim = e.shape[2];
  const fields = layout.features.sparse;
  if (fields.length === s.slots) return e;
  // Token lists take several slots: sum their (1/n-weighted) slots into one field embedding.
  // Runs of single-slot fields are sliced as one piece.
  const parts: tf.Tensor3D[] = [];
  let i = 0;
  while (i < fields.length) {
    const f = fields[i]!;
    if (f.width > 1) {
      parts.push(e.slice([0, f.slot, 0], [size, f.width, dim]).sum(1, true));
      i++;
      continue;
    }
    let j = i;
    while (j < fields.length && fields[j]!.width === 1) j++;
    parts.push(e.slice([0, f.slot, 0], [size, j - i, dim]));
    i = j;
  }
  return parts.length === 1 ? parts[0]! : tf.concat3d(parts, 1);
}

/**
 * x·W + b with a hand-written gradient: the wasm backend's matMul with a transposed operand is
 * ~8× slower than transposing first (25 ms vs 3 ms for 512×128 · 128×429), and tfjs' own
 * gradient uses the transposed forms.
 */
const linear = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [x, w, b] = args as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
  const save = args[3] as tf.GradSaveFunc;
  // Saved, not closed over: the forward pass's tidy disposes intermediates such as x.
  save([x, w]);
  return {
    value: tf.add(tf.matMul(x, w), b),
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const g = dy as tf.Tensor2D;
      const [x, w] = saved as [tf.Tensor2D, tf.Tensor2D];
      return [tf.matMul(g, tf.transpose(w)), tf.matMul(tf.transpose(x), g), tf.sum(g, 0)];
    },
  };
});

function mlp(layers: LinearLayer[], x: tf.Tensor2D, p: Map<number, tf.Tensor>): tf.Tensor2D {
  let h = x;
  layers.forEach((l, i) => {
    h = linear(h, dense(l.w, p), dense(l.b, p)) as tf.Tensor2D;
    if (i < layers.length - 1) h = tf.relu(h);
  });
  return h;
}

/** Logits [B] of the batch under the layout's model. */
function forward(
  layout: ModelLayout,
  batch: EncodedBatch,
  p: Map<number, tf.Tensor>,
  consts: Constants,
): tf.Tensor1D {
  const n = batch.size;
  const input = (table: number | undefined) => {
    if (table === undefined) return undefined;
    const s = batch.sparse.find((x) => x.table === table)!;
    return pooled(layout, s, p.get(table) as tf.Tensor3D, n);
  };
  const emb = input(layout.emb);
  const wide = input(layout.wide);
  const x = consts.numeric;
  const N = layout.numericDim;
  const terms: tf.Tensor1D[] = [];
  if (wide) terms.push(wide.sum([1, 2]) as tf.Tensor1D);
  if (layout.lin) {
    const lin = dense(layout.lin, p);
    const bias = lin.slice([N], [1]);
    if (N > 0)
      terms.push(tf.add(tf.matMul(x, lin.slice([0], [N]).reshape([N, 1])).reshape([n]), bias) as tf.Tensor1D);
    else terms.push(tf.broadcastTo(bias, [n]) as tf.Tensor1D);
  }
  if (emb && (layout.kind === 'fm' || layout.kind === 'deepfm')) {
    // FM pairwise term: ½ Σ_k ((Σ_f v_fk)² − Σ_f v_fk²)
    const s = emb.sum(1);
    terms.push(tf.mul(0.5, tf.sub(s.square(), emb.square().sum(1)).sum(1)) as tf.Tensor1D);
  }
  if (emb && (layout.kind === 'wide-deep' || layout.kind === 'deepfm')) {
    const [, f, k] = emb.shape;
    const flat = emb.reshape([n, f * k]) as tf.Tensor2D;
    terms.push(mlp(layout.mlp, N > 0 ? tf.concat2d([flat, x], 1) : flat, p).reshape([n]));
  }
  if (emb && layout.kind === 'seed') {
    const mean = emb.mean(1) as tf.Tensor2D;
    terms.push(mlp(layout.mlp, N > 0 ? tf.concat2d([mean, x], 1) : mean, p).reshape([n]));
  }
  if (emb && layout.kind === 'two-tower') {
    const [, f, k] = emb.shape;
    const fu = layout.userFields;
    const nu = layout.userNumeric;
    const tower = (from: number, count: number, numFrom: number, numCount: number, layers: LinearLayer[]) => {
      const e = emb.slice([0, from, 0], [n, count, k]).reshape([n, count * k]) as tf.Tensor2D;
      const xin = numCount > 0 ? tf.concat2d([e, x.slice([0, numFrom], [n, numCount])], 1) : e;
      return mlp(layers, xin, p);
    };
    const user = tower(0, fu, 0, nu, layout.userTower);
    const item = tower(fu, f - fu, nu, N - nu, layout.itemTower);
    terms.push(tf.add(tf.mul(user, item).sum(1), dense(layout.bias!, p)) as tf.Tensor1D);
  }
  if (terms.length === 0) throw new FreshetError('INTERNAL', `model kind ${layout.kind} has no terms`);
  return (terms.length === 1 ? terms[0]! : tf.addN(terms)) as tf.Tensor1D;
}

/**
 * Σ w·BCE(z, y) / B with a hand-written gradient w·(σ(z) − y)/B: exact at z = 0, where the
 * relu/abs formulation's subgradients would give −y instead of ½ − y (an all-zero LR starts there).
 */
function bceWithLogits(z: tf.Tensor1D, y: tf.Tensor1D, w: tf.Tensor1D, n: number): tf.Scalar {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const logits = args[0] as tf.Tensor;
    (args[1] as tf.GradSaveFunc)([logits]);
    const l = tf.add(tf.sub(tf.relu(logits), tf.mul(logits, y)), tf.log1p(tf.exp(tf.neg(tf.abs(logits)))));
    return {
      value: tf.div(tf.sum(tf.mul(w, l)), n),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        tf.mul(dy as tf.Tensor, tf.div(tf.mul(w, tf.sub(tf.sigmoid(saved[0]!), y)), n)),
    };
  });
  return f(z) as tf.Scalar;
}
