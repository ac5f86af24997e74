import { initRow, type TableSpec } from '@freshet/protocol';
import { AdmissionSketch } from './admission.js';
import { AdamBias, adamRows, adamStateDim } from './optimizers/adam.js';
import { adagradInitRow, adagradRows, adagradStateDim } from './optimizers/adagrad.js';
import { ftrlInitRow, ftrlRows, ftrlStateDim } from './optimizers/ftrl.js';
import type { RowUpdate } from './optimizers/row-grad.js';
import { sgdRows, sgdStateDim } from './optimizers/sgd.js';
import { RowStore, TICK_MS } from './row-store.js';

function stateDimOf(spec: TableSpec): number {
  switch (spec.optimizer.kind) {
    case 'adam':
      return adamStateDim(spec.dim);
    case 'adagrad':
      return adagradStateDim(spec.dim);
    case 'ftrl':
      return ftrlStateDim(spec.dim);
    case 'sgd':
      return sgdStateDim(spec.dim);
  }
}

/** Growable u32 list (tombstone keys, dirty row ids). */
class U32List {
  a = new Uint32Array(64);
  n = 0;
  push(x: number): void {
    if (this.n === this.a.length) {
      const b = new Uint32Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    this.a[this.n++] = x;
  }
}

/**
 * One table on one shard: its rows, its optimizer, admission counts, and what changed since the
 * last delta (dirty rows, tombstones).
 */
export class ParamTable {
  readonly store: RowStore;
  readonly sketch: AdmissionSketch | undefined;
  private readonly bias: AdamBias | undefined;
  private readonly ttlTicks: number;
  private dirtyBits = new Uint32Array(0);
  private readonly dirty = new U32List();
  private readonly dead = new U32List();
  private evictCursor = 0;
  /** Rows created / evicted since start. */
  created = 0;
  evicted = 0;

  constructor(
    readonly id: number,
    readonly spec: TableSpec,
    /** Whether this shard holds the table's rows (a dense table lives on one shard). */
    readonly owned: boolean,
    sketchWidth: number,
    chunkRows?: number,
  ) {
    const dense = spec.kind === 'dense';
    this.store = new RowStore({
      dim: spec.dim,
      stateDim: stateDimOf(spec),
      chunkRows: dense ? 1 : (chunkRows ?? 4096),
      initialSlots: dense ? 16 : 1024,
    });
    this.sketch = spec.minCount > 1 && !dense ? new AdmissionSketch(sketchWidth) : undefined;
    this.bias =
      spec.optimizer.kind === 'adam' ? new AdamBias(spec.optimizer.beta1, spec.optimizer.beta2) : undefined;
    this.ttlTicks = spec.ttlMs > 0 ? Math.max(1, Math.ceil(spec.ttlMs / TICK_MS)) : 0;
  }

  get dim(): number {
    return this.spec.dim;
  }
  get dense(): boolean {
    return this.spec.kind === 'dense';
  }
  get bytes(): number {
    return (
      this.store.bytes +
      (this.sketch?.bytes ?? 0) +
      this.dirtyBits.byteLength +
      this.dirty.a.byteLength +
      this.dead.a.byteLength
    );
  }
  get pendingDirty(): number {
    return this.dirty.n;
  }
  get pendingDead(): number {
    return this.dead.n / 2;
  }

  /** Creates a row with its deterministic initial values and fresh optimizer state. */
  create(lo: number, hi: number, tick: number): number {
    const s = this.store;
    const r = s.insert(lo, hi, tick);
    const f = s.chunkF(r);
    const o = s.valueOffset(r);
    initRow(this.spec.init, lo, hi, f, o, this.spec.dim);
    const opt = this.spec.optimizer;
    if (opt.kind === 'adagrad') adagradInitRow(f, o, this.spec.dim, opt);
    else if (opt.kind === 'ftrl') ftrlInitRow(f, o, this.spec.dim, opt);
    this.created++;
    this.markDirty(r);
    return r;
  }

  /**
   * Resolves push keys to rows, creating admitted rows; −1 for ids still below `minCount`.
   * Touched rows get `tick` as their last-seen time.
   */
  resolveForPush(keys: Uint32Array, counts: Uint32Array, tick: number, out: Int32Array): void {
    const s = this.store;
    const n = keys.length >>> 1;
    const minCount = this.spec.minCount;
    for (let i = 0; i < n; i++) {
      const lo = keys[2 * i]!;
      const hi = keys[2 * i + 1]!;
      let r = s.find(lo, hi);
      if (r < 0) {
        if (this.sketch && this.sketch.add(lo, hi, Math.max(1, counts[i]!)) < minCount) {
          out[i] = -1;
          continue;
        }
        r = this.create(lo, hi, tick);
      } else {
        s.setLastSeen(r, tick);
        this.markDirty(r);
      }
      out[i] = r;
    }
  }

  /** Applies the table's optimizer to resolved rows. Returns rows updated. */
  update(rows: Int32Array, n: number, grads: Float32Array, lrScale: number): number {
    const u: RowUpdate = { lrScale, l2: this.spec.l2, clipNorm: this.spec.clipNorm };
    const opt = this.spec.optimizer;
    switch (opt.kind) {
      case 'adam':
        return adamRows(this.store, rows, n, grads, opt, this.bias!, u);
      case 'adagrad':
        return adagradRows(this.store, rows, n, grads, opt, u);
      case 'ftrl':
        return ftrlRows(this.store, rows, n, grads, opt, u);
      case 'sgd':
        return sgdRows(this.store, rows, n, grads, opt, u);
    }
  }

  /** Writes the current values of keys into out (deterministic init for rows that do not exist). */
  read(keys: Uint32Array, out: Float32Array): void {
    const s = this.store;
    const dim = this.spec.dim;
    const n = keys.length >>> 1;
    for (let i = 0; i < n; i++) {
      const lo = keys[2 * i]!;
      const hi = keys[2 * i + 1]!;
      const r = s.find(lo, hi);
      if (r < 0) {
        initRow(this.spec.init, lo, hi, out, i * dim, dim);
        continue;
      }
      const o = s.valueOffset(r);
      out.set(s.chunkF(r).subarray(o, o + dim), i * dim);
    }
  }

  /** Current weights of an existing key into out at `at`; false when the row does not exist. */
  readOne(lo: number, hi: number, out: Float32Array, at: number): boolean {
    const r = this.store.find(lo, hi);
    if (r < 0) return false;
    const o = this.store.valueOffset(r);
    out.set(this.store.chunkF(r).subarray(o, o + this.spec.dim), at);
    return true;
  }

  markDirty(r: number): void {
    const w = r >>> 5;
    if (w >= this.dirtyBits.length) {
      const b = new Uint32Array(Math.max(64, (w + 1) * 2));
      b.set(this.dirtyBits);
      this.dirtyBits = b;
    }
    const bit = 1 << (r & 31);
    if ((this.dirtyBits[w]! & bit) !== 0) return;
    this.dirtyBits[w] = this.dirtyBits[w]! | bit;
    this.dirty.push(r);
  }

  /** Removes rows (eviction or replayed eviction) and queues their tombstones. */
  removeKeys(keys: Uint32Array): number {
    let removed = 0;
    for (let i = 0; i < keys.length; i += 2) {
      const r = this.store.find(keys[i]!, keys[i + 1]!);
      if (r < 0) continue;
      this.store.remove(r);
      this.dead.push(keys[i]!);
      this.dead.push(keys[i + 1]!);
      removed++;
    }
    this.evicted += removed;
    return removed;
  }

  /**
   * Scans up to `budget` rows from where the last scan stopped and returns the keys of rows
   * unseen since `nowTick − ttl` (not yet removed: the caller logs, then removes them).
   */
  expired(nowTick: number, budget: number): Uint32Array {
    if (this.ttlTicks === 0 || this.dense) return new Uint32Array(0);
    const s = this.store;
    const out = new U32List();
    const end = s.end;
    if (this.evictCursor >= end) this.evictCursor = 0;
    const stop = Math.min(end, this.evictCursor + budget);
    const limit = nowTick - this.ttlTicks;
    for (let r = this.evictCursor; r < stop; r++) {
      if (!s.isLive(r)) continue;
      if (s.lastSeen(r) < limit) {
        out.push(s.keyLo(r));
        out.push(s.keyHi(r));
      }
    }
    this.evictCursor = stop;
    return out.a.slice(0, out.n);
  }

  /**
   * Takes up to `maxRows` changed rows (values only) and the pending tombstones. Rows beyond the
   * budget stay dirty for the next delta. A tombstone whose key was created again is dropped.
   */
  takeChanges(maxRows: number): { keys: Uint32Array; values: Float32Array; deadKeys: Uint32Array } {
    const s = this.store;
    const dim = this.spec.dim;
    const take = Math.min(maxRows, this.dirty.n);
    const rows: number[] = [];
    for (let k = 0; k < take; k++) {
      const r = this.dirty.a[--this.dirty.n]!;
      this.dirtyBits[r >>> 5] = this.dirtyBits[r >>> 5]! & ~(1 << (r & 31));
      if (s.isLive(r)) rows.push(r);
    }
    const keys = new Uint32Array(rows.length * 2);
    const values = new Float32Array(rows.length * dim);
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]!;
      keys[2 * i] = s.keyLo(r);
      keys[2 * i + 1] = s.keyHi(r);
      const f = s.chunkF(r);
      const o = s.valueOffset(r);
      const at = i * dim;
      for (let k = 0; k < dim; k++) values[at + k] = f[o + k]!;
    }
    let deadKeys = new Uint32Array(0);
    if (this.dead.n > 0) {
      const d = new U32List();
      for (let i = 0; i < this.dead.n; i += 2) {
        if (s.find(this.dead.a[i]!, this.dead.a[i + 1]!) >= 0) continue;
        d.push(this.dead.a[i]!);
        d.push(this.dead.a[i + 1]!);
      }
      deadKeys = d.a.slice(0, d.n);
      this.dead.n = 0;
    }
    return { keys, values, deadKeys };
  }

  /** Pending delta state for a checkpoint (so unpublished changes survive a restart). */
  pendingState(): { dirty: Uint32Array; dead: Uint32Array } {
    return { dirty: this.dirty.a.slice(0, this.dirty.n), dead: this.dead.a.slice(0, this.dead.n) };
  }
  restorePending(dirty: Uint32Array, dead: Uint32Array): void {
    for (const r of dirty) if (this.store.isLive(r)) this.markDirty(r);
    for (const x of dead) this.dead.push(x);
  }
}
