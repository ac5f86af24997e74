import { FreshetError, pushesState, type TableSpec } from '@freshet/protocol';
import type { BatchRows, EncodedBatch, GradientResult } from './batch.js';
import { soleTable } from './model-config.js';
import type { Model } from './model.js';

/** Whether a model's batches are trained by {@link ftrlSequential} (see `sequential` FTRL). */
export function isSequentialFtrl(model: Pick<Model, 'layout' | 'spec'>): boolean {
  return model.layout.kind === 'lr' && model.spec.tables.every(pushesState);
}

/** One table's pulled state as float64 working copies, and what this batch adds to z and n. */
class LocalState {
  readonly w: Float64Array;
  readonly z: Float64Array;
  readonly n: Float64Array;
  private readonly z0: Float64Array;
  private readonly n0: Float64Array;
  private readonly alpha: number;
  private readonly beta: number;
  private readonly l1: number;
  private readonly l2: number;
  private readonly decay: number;
  private readonly clip: number;

  /** `rows`: per row [w × dim][z × dim][n × dim]; here every row has dim 1 or is one dense tensor. */
  constructor(
    spec: TableSpec,
    rows: Float32Array,
    readonly count: number,
    private readonly dim: number,
  ) {
    const o = spec.optimizer;
    if (o.kind !== 'ftrl') throw new Error('unreachable: sequential FTRL on a non-FTRL table');
    this.alpha = o.alpha;
    this.beta = o.beta;
    this.l1 = o.l1;
    this.l2 = o.l2;
    this.decay = spec.l2;
    this.clip = spec.clipNorm;
    const size = count * dim;
    this.w = new Float64Array(size);
    this.z = new Float64Array(size);
    this.n = new Float64Array(size);
    for (let r = 0; r < count; r++) {
      const b = r * 3 * dim;
      for (let k = 0; k < dim; k++) {
        this.w[r * dim + k] = rows[b + k]!;
        this.z[r * dim + k] = rows[b + dim + k]!;
        this.n[r * dim + k] = rows[b + 2 * dim + k]!;
      }
    }
    this.z0 = this.z.slice();
    this.n0 = this.n.slice();
  }

  /**
   * One example's gradient g on coordinate i (w as it was when the example was scored), as the
   * shard's FTRL kernel applies it: weight decay added, the per-example value clipped.
   */
  step(i: number, g: number, w: number): void {
    let gk = g;
    if (this.clip > 0 && Math.abs(gk) > this.clip) gk = Math.sign(gk) * this.clip;
    gk += this.decay * w;
    const nOld = this.n[i]!;
    const nNew = nOld + gk * gk;
    const z = this.z[i]! + gk - ((Math.sqrt(nNew) - Math.sqrt(nOld)) / this.alpha) * w;
    this.z[i] = z;
    this.n[i] = nNew;
    this.w[i] =
      Math.abs(z) <= this.l1
        ? 0
        : -(z - Math.sign(z) * this.l1) / ((this.beta + Math.sqrt(nNew)) / this.alpha + this.l2);
  }

  /** Per row [Δz × dim][Δn × dim], the push layout of a state-pushing table. */
  deltas(): Float32Array {
    const d = this.dim;
    const out = new Float32Array(this.count * 2 * d);
    for (let r = 0; r < this.count; r++) {
      for (let k = 0; k < d; k++) {
        const i = r * d + k;
        out[r * 2 * d + k] = this.z[i]! - this.z0[i]!;
        out[r * 2 * d + d + k] = this.n[i]! - this.n0[i]!;
      }
    }
    return out;
  }
}

/**
 * Trains an `lr` model's batch one example at a time, as FTRL-Proximal does (McMahan et al.
 * 2013): each example is scored with the weights every earlier example of the batch left, then
 * its gradient updates z, n and w of the coordinates it touches. `rows` hold the pulled w, z, n;
 * the result's `grads` are what the batch added to z and n (the shard adds them, so concurrent
 * batches' contributions sum as their examples' would), `preds` the progressive scores.
 */
export function ftrlSequential(model: Model, batch: EncodedBatch, rows: BatchRows): GradientResult {
  const { layout, spec } = model;
  const B = batch.size;
  const N = layout.numericDim;
  const grads: (Float32Array | undefined)[] = new Array<Float32Array | undefined>(spec.tables.length);
  const wideInput = layout.wide === undefined ? undefined : batch.sparse.find((s) => s.table === layout.wide);
  let wide: LocalState | undefined;
  if (wideInput) {
    const u = wideInput.keys.length / 2;
    wide = new LocalState(spec.tables[wideInput.table]!, checkRows(rows, wideInput.table, u * 3), u, 1);
  }
  const linTable = layout.lin && soleTable(layout.lin);
  const lin =
    linTable === undefined
      ? undefined
      : new LocalState(spec.tables[linTable]!, checkRows(rows, linTable, 3 * (N + 1)), 1, N + 1);
  const preds = new Float32Array(B);
  let loss = 0;
  const slots = wideInput?.slots ?? 0;
  const used = new Float64Array(slots);
  const usedLin = new Float64Array(N + 1);
  for (let e = 0; e < B; e++) {
    let logit = 0;
    if (wide && wideInput) {
      for (let s = 0; s < slots; s++) {
        const row = wideInput.index[e * slots + s]!;
        if (row < 0) continue;
        used[s] = wide.w[row]!;
        logit += used[s]! * (wideInput.slotWeights ? wideInput.slotWeights[e * slots + s]! : 1);
      }
    }
    if (lin) {
      for (let j = 0; j <= N; j++) usedLin[j] = lin.w[j]!;
      for (let j = 0; j < N; j++) logit += batch.numeric[e * N + j]! * usedLin[j]!;
      logit += usedLin[N]!;
    }
    const p = 1 / (1 + Math.exp(-Math.max(-35, Math.min(35, logit))));
    preds[e] = p;
    const y = batch.labels[e]!;
    const we = batch.weights[e]!;
    // log(1 + e^−|z|) + max(z, 0) − z·y: the stable form the compute graph uses
    loss += we * (Math.max(logit, 0) - logit * y + Math.log1p(Math.exp(-Math.abs(logit))));
    const r = we * (p - y);
    if (r === 0) continue;
    if (wide && wideInput) {
      const at = e * slots;
      for (let s = 0; s < slots; s++) {
        const row = wideInput.index[at + s]!;
        if (row < 0) continue;
        // a row in several slots (a hash collision, a repeated token) takes one step with the
        // sum of its slot weights, as the coordinate's gradient is
        let first = true;
        for (let q = 0; q < s && first; q++) first = wideInput.index[at + q] !== row;
        if (!first) continue;
        let sw = 0;
        for (let q = s; q < slots; q++) {
          if (wideInput.index[at + q] === row)
            sw += wideInput.slotWeights ? wideInput.slotWeights[at + q]! : 1;
        }
        if (sw !== 0) wide.step(row, r * sw, used[s]!);
      }
    }
    if (lin) {
      for (let j = 0; j < N; j++) {
        const x = batch.numeric[e * N + j]!;
        if (x !== 0) lin.step(j, r * x, usedLin[j]!);
      }
      lin.step(N, r, usedLin[N]!);
    }
  }
  if (wide && wideInput) grads[wideInput.table] = wide.deltas();
  if (lin && linTable !== undefined) grads[linTable] = lin.deltas();
  loss /= B;
  if (!Number.isFinite(loss)) throw new FreshetError('NON_FINITE', `loss is ${loss}`);
  for (const g of grads) {
    if (!g) continue;
    for (let i = 0; i < g.length; i++) {
      if (!Number.isFinite(g[i]!))
        throw new FreshetError('NON_FINITE', 'sequential FTRL: non-finite state delta');
    }
  }
  return { preds, loss, grads };
}

function checkRows(rows: BatchRows, table: number, want: number): Float32Array {
  const r = rows[table];
  if (!r || r.length !== want) {
    throw new FreshetError(
      'WRONG_LENGTH',
      `sequential FTRL: rows of table ${table} must hold ${want} floats (w, z, n per row); pull with state`,
    );
  }
  return r;
}
