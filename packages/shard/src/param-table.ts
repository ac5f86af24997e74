import { FreshetError, initRow, pushesState, type TableSpec } from '@freshet/protocol';
import { AdmissionSketch } from './admission.js';
import { AdamBias, adamRows, adamStateDim } from './optimizers/adam.js';
import { adagradInitRow, adagradRows, adagradStateDim } from './optimizers/adagrad.js';
import { ftrlInitRow, ftrlRows, ftrlStateDim, ftrlStateRows } from './optimizers/ftrl.js';
import type { RowUpdate } from './optimizers/row-grad.js';
import { sgdRows, sgdStateDim } from './optimizers/sgd.js';
import { addRows } from './optimizers/weight-delta.js';
import { firstNonFinite, type PushUndo, type UndoTarget } from './push-undo.js';
import { META_WORDS, RowStore, TICK_MS } from './row-store.js';

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
export class ParamTable implements UndoTarget {
  readonly store: RowStore;
  readonly sketch: AdmissionSketch | undefined;
  private readonly bias: AdamBias | undefined;
  private readonly ttlTicks: number;
  private dirtyBits = new Uint32Array(0);
  /** Rows dirtied outside the push path (created at start, restored): read back at delta time. */
  private readonly dirty = new U32List();
  /**
   * Values of rows as pushes left them, appended right after each update while the row is in
   * cache: [lo, hi, row, w × dim] per entry. A delta reads this sequentially (newest entry of a
   * row wins, via the dirty bit) instead of gathering random rows again — on a 1M-row table the
   * gather cost as much as the update itself (TLB misses). Bounded; past the bound rows fall
   * back to the dirty list.
   */
  private stagedF = new Float32Array(0);
  private stagedU = new Uint32Array(0);
  private stagedN = 0;
  private readonly stageStride: number;
  private readonly maxStaged: number;
  private readonly dead = new U32List();
  private evictCursor = 0;
  /**
   * Pushes applied to this table on this shard: Adam's bias-correction step in `table` mode.
   * Checkpointed, and rebuilt by a log replay (each replayed push counts again).
   */
  steps = 0;
  /** Rows created / evicted since start. */
  created = 0;
  evicted = 0;

  constructor(
    readonly id: number,
    readonly spec: TableSpec,
    /** Whether this shard holds the table's rows (a dense table, or one part of a tensor, lives on one shard). */
    readonly owned: boolean,
    sketchWidth: number,
    chunkRows?: number,
    /** Admission counts halve every this many ms (0: never); see admission.ts. */
    sketchDecayMs = 0,
  ) {
    const dense = spec.kind === 'dense';
    this.store = new RowStore({
      dim: spec.dim,
      stateDim: stateDimOf(spec),
      chunkRows: dense ? 1 : (chunkRows ?? 4096),
      initialSlots: dense ? 16 : 1024,
    });
    this.sketch =
      spec.minCount > 1 && !dense
        ? new AdmissionSketch(sketchWidth, undefined, Math.ceil(sketchDecayMs / TICK_MS))
        : undefined;
    this.bias =
      spec.optimizer.kind === 'adam' ? new AdamBias(spec.optimizer.beta1, spec.optimizer.beta2) : undefined;
    this.ttlTicks = spec.ttlMs > 0 ? Math.max(1, Math.ceil(spec.ttlMs / TICK_MS)) : 0;
    this.stageStride = spec.dim + 3;
    this.maxStaged = Math.max(64, Math.floor((16 << 20) / (this.stageStride * 4)));
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
      this.stagedF.byteLength +
      this.dead.a.byteLength
    );
  }
  /** Upper bound of rows waiting for a delta. */
  get pendingDirty(): number {
    return this.dirty.n + this.stagedN;
  }
  get pendingDead(): number {
    return this.dead.n / 2;
  }

  /** Creates a row with its deterministic initial values and fresh optimizer state. */
  create(lo: number, hi: number, tick: number, mark = true): number {
    const s = this.store;
    const r = s.insert(lo, hi, tick);
    const f = s.chunkF(r);
    const o = s.valueOffset(r);
    initRow(this.spec.init, lo, hi, f, o, this.spec.dim);
    const opt = this.spec.optimizer;
    if (opt.kind === 'adagrad') adagradInitRow(f, o, this.spec.dim, opt);
    else if (opt.kind === 'ftrl') ftrlInitRow(f, o, this.spec.dim, opt);
    this.created++;
    if (mark) this.markDirty(r);
    return r;
  }

  /**
   * Resolves push keys to rows, creating admitted rows; −1 for ids still below `minCount`.
   * Touched rows get `tick` as their last-seen time; {@link push} stages them for the delta.
   */
  resolveForPush(
    keys: Uint32Array,
    counts: Uint32Array,
    tick: number,
    out: Int32Array,
    from = 0,
    to = keys.length >>> 1,
    undo?: PushUndo,
  ): void {
    const s = this.store;
    const minCount = this.spec.minCount;
    s.findBlock(keys, from, to, out);
    for (let i = from; i < to; i++) {
      const lo = keys[2 * i]!;
      const hi = keys[2 * i + 1]!;
      let r = out[i]!;
      // A miss is looked up again: an earlier duplicate of the key in this block may have created it.
      if (r < 0) r = s.find(lo, hi);
      if (r < 0) {
        if (this.sketch && this.sketch.add(lo, hi, Math.max(1, counts[i]!)) < minCount) {
          out[i] = -1;
          continue;
        }
        r = this.create(lo, hi, tick, false);
        undo?.createdRow(this.id, r);
      } else {
        // saved before anything of it changes (lastSeen included)
        undo?.saveRow(this.id, s, r, this.isDirty(r));
        s.setLastSeen(r, tick);
      }
      out[i] = r;
    }
  }

  /**
   * Applies the table's optimizer to resolved rows [from, to) as part of push number
   * {@link steps}. `examples`: how many examples the (mean-loss) gradients average over.
   * Returns rows updated.
   */
  update(
    rows: Int32Array,
    from: number,
    to: number,
    grads: Float32Array,
    lrScale: number,
    examples = 1,
  ): number {
    const opt = this.spec.optimizer;
    const perExample = opt.kind === 'adagrad' || opt.kind === 'ftrl';
    const u: RowUpdate = {
      lrScale,
      l2: this.spec.l2,
      clipNorm: this.spec.clipNorm,
      gradScale: perExample ? examples : 1,
    };
    switch (opt.kind) {
      case 'adam': {
        // a spec stored before the option existed has no field: the table mode is the default
        const tableStep = opt.biasCorrection === 'row' ? 0 : Math.max(1, this.steps);
        return adamRows(this.store, rows, from, to, grads, opt, this.bias!, u, tableStep);
      }
      case 'adagrad':
        return adagradRows(this.store, rows, from, to, grads, opt, u);
      case 'ftrl':
        return opt.sequential === true
          ? ftrlStateRows(this.store, rows, from, to, grads, opt, u)
          : ftrlRows(this.store, rows, from, to, grads, opt, u);
      case 'sgd':
        return sgdRows(this.store, rows, from, to, grads, opt, u);
    }
  }

  /**
   * Resolves and updates a push's rows in blocks of 16: a row's cache lines, brought in by the
   * index lookup, are still in cache when the optimizer runs (measured ~18% faster than two
   * passes over a 8192-row push on a 1M-row table).
   */
  push(
    keys: Uint32Array,
    counts: Uint32Array,
    grads: Float32Array,
    tick: number,
    lrScale: number,
    scratch: Int32Array,
    examples = 1,
    undo?: PushUndo,
    /** `grads` are weight deltas to add (a dense replica's flush): no optimizer step. */
    add = false,
  ): number {
    const n = keys.length >>> 1;
    undo?.beginTable(this.id, this.steps, this.stagedN, this.created);
    if (n > 0 && !add) this.steps++;
    this.sketch?.advance(tick);
    let applied = 0;
    for (let from = 0; from < n; from += 16) {
      const to = Math.min(n, from + 16);
      this.resolveForPush(keys, counts, tick, scratch, from, to, undo);
      applied += add
        ? addRows(this.store, scratch, from, to, grads)
        : this.update(scratch, from, to, grads, lrScale, examples);
      // Checked while the block is in cache, before it is staged: non-finite values never
      // reach a delta; the caller rolls the whole push back from `undo`.
      if (undo) {
        const bad = firstNonFinite(this.store, scratch, from, to);
        if (bad) throw this.nonFiniteState(keys, bad.i, bad.k);
      }
      for (let i = from; i < to; i++) if (scratch[i]! >= 0) this.stage(scratch[i]!);
    }
    return applied;
  }

  private nonFiniteState(keys: Uint32Array, i: number, k: number): FreshetError {
    const dim = this.spec.dim;
    const what = k < dim ? `weight ${k}` : `${this.spec.optimizer.kind} state ${k - dim}`;
    return new FreshetError(
      'NON_FINITE_STATE',
      `table ${this.id} (${this.spec.name}), key ${keys[2 * i]}:${keys[2 * i + 1]}: the update made ${what} non-finite; push rolled back whole`,
    );
  }

  /** Whether row r waits for a delta. */
  private isDirty(r: number): boolean {
    const w = r >>> 5;
    return w < this.dirtyBits.length && (this.dirtyBits[w]! & (1 << (r & 31))) !== 0;
  }

  private clearDirtyBit(r: number): void {
    const w = r >>> 5;
    if (w < this.dirtyBits.length) this.dirtyBits[w] = this.dirtyBits[w]! & ~(1 << (r & 31));
  }

  /**
   * Undo of a rolled-back push (see push-undo.ts). A row that was dirty before the push keeps
   * its bit: its earlier staged entry or dirty-list entry carries exactly the restored values.
   */
  restoreRow(r: number, words: Uint32Array, at: number, wasDirty: boolean): void {
    const s = this.store;
    s.chunkU(r).set(words.subarray(at, at + s.stride), s.offset(r));
    if (!wasDirty) this.clearDirtyBit(r);
  }
  dropCreatedRow(r: number): void {
    this.clearDirtyBit(r);
    this.store.remove(r);
  }
  rewindPush(steps: number, staged: number, created: number): void {
    this.steps = steps;
    this.stagedN = Math.min(this.stagedN, staged);
    this.created = created;
  }

  /**
   * Writes the current values of keys into out (deterministic init for rows that do not exist).
   * With `state`, a state-pushing table's rows come as [w, z, n] × dim, a new row's z the one
   * that keeps its initial w (as {@link create} sets it).
   */
  read(keys: Uint32Array, out: Float32Array, state = false): void {
    const s = this.store;
    const dim = this.spec.dim;
    const withState = state && pushesState(this.spec);
    const width = withState ? 3 * dim : dim;
    const n = keys.length >>> 1;
    for (let i = 0; i < n; i++) {
      const lo = keys[2 * i]!;
      const hi = keys[2 * i + 1]!;
      const r = s.find(lo, hi);
      if (r < 0) {
        initRow(this.spec.init, lo, hi, out, i * width, dim);
        if (withState && this.spec.optimizer.kind === 'ftrl')
          ftrlInitRow(out, i * width, dim, this.spec.optimizer);
        continue;
      }
      const o = s.valueOffset(r);
      out.set(s.chunkF(r).subarray(o, o + width), i * width);
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

  /** Sets row r's dirty bit; returns false when it was already set. */
  private setDirtyBit(r: number): boolean {
    const w = r >>> 5;
    if (w >= this.dirtyBits.length) {
      const b = new Uint32Array(Math.max(64, (w + 1) * 2));
      b.set(this.dirtyBits);
      this.dirtyBits = b;
    }
    const bit = 1 << (r & 31);
    if ((this.dirtyBits[w]! & bit) !== 0) return false;
    this.dirtyBits[w] = this.dirtyBits[w]! | bit;
    return true;
  }

  /** Queues row r for the next delta, to be read from the row then. */
  markDirty(r: number): void {
    if (this.setDirtyBit(r)) this.dirty.push(r);
  }

  /** Appends row r's current values to the staging log (it was just updated, so it is in cache). */
  private stage(r: number): void {
    // A dense table's one row is read back once per delta instead: staging would copy the whole
    // tensor (or part) on every push and reserve 1024 entries of its width on the first.
    if (this.stagedN >= this.maxStaged || this.dense) {
      this.markDirty(r);
      return;
    }
    const st = this.stageStride;
    if ((this.stagedN + 1) * st > this.stagedU.length) {
      const cap = Math.min(this.maxStaged, Math.max(1024, this.stagedN * 2)) * st;
      const buf = new ArrayBuffer(cap * 4);
      const u = new Uint32Array(buf);
      u.set(this.stagedU.subarray(0, this.stagedN * st));
      this.stagedU = u;
      this.stagedF = new Float32Array(buf);
    }
    this.setDirtyBit(r);
    const s = this.store;
    const c = r >>> s.chunkShift;
    const ru = s.u[c]!;
    const rf = s.f[c]!;
    const o = (r & s.chunkMask) * s.stride;
    const at = this.stagedN * st;
    const su = this.stagedU;
    const sf = this.stagedF;
    su[at] = ru[o]!;
    su[at + 1] = ru[o + 1]!;
    su[at + 2] = r;
    const dim = this.spec.dim;
    const vo = o + META_WORDS;
    for (let k = 0; k < dim; k++) sf[at + 3 + k] = rf[vo + k]!;
    this.stagedN++;
  }

  /** Removes rows (eviction or replayed eviction) and queues their tombstones. */
  removeKeys(keys: Uint32Array): number {
    let removed = 0;
    for (let i = 0; i < keys.length; i += 2) {
      const r = this.store.find(keys[i]!, keys[i + 1]!);
      if (r < 0) continue;
      this.store.remove(r);
      // A removed row must not go out as a value: its staged entries are skipped by the bit.
      if (r >>> 5 < this.dirtyBits.length)
        this.dirtyBits[r >>> 5] = this.dirtyBits[r >>> 5]! & ~(1 << (r & 31));
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
    const bound = Math.min(maxRows, this.dirty.n + this.stagedN);
    const keys = new Uint32Array(bound * 2);
    const values = new Float32Array(bound * dim);
    const bits = this.dirtyBits;
    let n = 0;
    // Staged entries, newest first: the first entry met for a row carries its latest values.
    // (Rows are created outside the push path only at start and restore, before any staging,
    // so a staged entry's row id still holds the staged key whenever its dirty bit is set.)
    const st = this.stageStride;
    const su = this.stagedU;
    const sf = this.stagedF;
    let p = this.stagedN;
    while (p > 0 && n < maxRows) {
      p--;
      const at = p * st;
      const r = su[at + 2]!;
      const w = r >>> 5;
      const bit = 1 << (r & 31);
      if ((bits[w]! & bit) === 0) continue;
      bits[w] = bits[w]! & ~bit;
      keys[2 * n] = su[at]!;
      keys[2 * n + 1] = su[at + 1]!;
      const vo = n * dim;
      for (let k = 0; k < dim; k++) values[vo + k] = sf[at + 3 + k]!;
      n++;
    }
    this.stagedN = p;
    // Rows dirtied outside the push path: read them back now.
    const list = this.dirty.a;
    while (this.dirty.n > 0 && n < maxRows) {
      const r = list[--this.dirty.n]!;
      const w = r >>> 5;
      const bit = 1 << (r & 31);
      if ((bits[w]! & bit) === 0 || !s.isLive(r)) continue;
      bits[w] = bits[w]! & ~bit;
      const c = r >>> s.chunkShift;
      const o = (r & s.chunkMask) * s.stride;
      keys[2 * n] = s.u[c]![o]!;
      keys[2 * n + 1] = s.u[c]![o + 1]!;
      const f = s.f[c]!;
      for (let k = 0; k < dim; k++) values[n * dim + k] = f[o + META_WORDS + k]!;
      n++;
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
    return { keys: keys.subarray(0, 2 * n), values: values.subarray(0, n * dim), deadKeys };
  }

  /** Pending delta state for a checkpoint (so unpublished changes survive a restart). */
  pendingState(): { dirty: Uint32Array; dead: Uint32Array } {
    const rows = new U32List();
    const bits = this.dirtyBits;
    const isSet = (r: number) => (bits[r >>> 5]! & (1 << (r & 31))) !== 0;
    for (let i = 0; i < this.dirty.n; i++) if (isSet(this.dirty.a[i]!)) rows.push(this.dirty.a[i]!);
    for (let i = 0; i < this.stagedN; i++) {
      const r = this.stagedU[i * this.stageStride + 2]!;
      if (isSet(r)) rows.push(r);
    }
    return { dirty: rows.a.slice(0, rows.n), dead: this.dead.a.slice(0, this.dead.n) };
  }
  restorePending(dirty: Uint32Array, dead: Uint32Array): void {
    for (const r of dirty) if (this.store.isLive(r)) this.markDirty(r);
    for (const x of dead) this.dead.push(x);
  }
}
