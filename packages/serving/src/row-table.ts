import { keyDigest } from '@freshet/protocol';

/**
 * One table's rows for one shard in compact typed arrays: an open-addressing index (linear
 * probing, backward-shift deletion, so no tombstones slow later probes) from a 64-bit key to a
 * row slot, and row-major values. Optionally a second array holds an exponential moving average
 * of each row, updated whenever the row is written.
 */
export class RowTable {
  readonly dim: number;
  private readonly emaDecay: number;
  private slotKeys: Uint32Array;
  private slotRow: Int32Array;
  private mask: number;
  private values: Float32Array;
  private ema: Float32Array | undefined;
  private rowCap: number;
  private highWater = 0;
  private freeRows: number[] = [];
  private live = 0;

  /** @param emaDecay 0 keeps no average; otherwise ema ← decay·ema + (1 − decay)·value on every write. */
  constructor(dim: number, emaDecay = 0, initialRows = 16) {
    this.dim = dim;
    this.emaDecay = emaDecay;
    let cap = 16;
    while (cap < initialRows * 2) cap *= 2;
    this.slotKeys = new Uint32Array(cap * 2);
    this.slotRow = new Int32Array(cap).fill(-1);
    this.mask = cap - 1;
    this.rowCap = Math.max(1, initialRows);
    this.values = new Float32Array(this.rowCap * dim);
    this.ema = emaDecay > 0 ? new Float32Array(this.rowCap * dim) : undefined;
  }

  /** Rows held. */
  get size(): number {
    return this.live;
  }

  /** Bytes of typed-array storage (index + values + average). */
  get bytes(): number {
    return (
      this.slotKeys.byteLength +
      this.slotRow.byteLength +
      this.values.byteLength +
      (this.ema?.byteLength ?? 0)
    );
  }

  private findSlot(lo: number, hi: number): number {
    let s = keyDigest(lo, hi) & this.mask;
    for (;;) {
      const r = this.slotRow[s]!;
      if (r < 0) return ~s;
      if (this.slotKeys[2 * s] === lo && this.slotKeys[2 * s + 1] === hi) return s;
      s = (s + 1) & this.mask;
    }
  }

  /** The row index of a key, or −1. */
  rowOf(lo: number, hi: number): number {
    const s = this.findSlot(lo >>> 0, hi >>> 0);
    return s < 0 ? -1 : this.slotRow[s]!;
  }

  /** Copies a row (its average when `useEma` and one is kept) into `out` at `at`. */
  copyRow(row: number, out: Float32Array, at: number, useEma = false): void {
    const src = useEma && this.ema ? this.ema : this.values;
    const d = this.dim;
    const base = row * d;
    for (let i = 0; i < d; i++) out[at + i] = src[base + i]!;
  }

  /** Live values of a row as a view (no copy); valid until the next write to the table. */
  view(row: number, useEma = false): Float32Array {
    const src = useEma && this.ema ? this.ema : this.values;
    return src.subarray(row * this.dim, (row + 1) * this.dim);
  }

  /** Inserts or overwrites a row from `src[at .. at+dim)`. */
  upsert(lo: number, hi: number, src: Float32Array, at: number): void {
    lo >>>= 0;
    hi >>>= 0;
    let s = this.findSlot(lo, hi);
    const d = this.dim;
    if (s >= 0) {
      const base = this.slotRow[s]! * d;
      const ema = this.ema;
      if (ema) {
        const a = this.emaDecay;
        for (let i = 0; i < d; i++) ema[base + i] = a * ema[base + i]! + (1 - a) * src[at + i]!;
      }
      for (let i = 0; i < d; i++) this.values[base + i] = src[at + i]!;
      return;
    }
    if ((this.live + 1) * 2 > this.slotRow.length) {
      this.rehash(this.slotRow.length * 2);
      s = this.findSlot(lo, hi);
    }
    s = ~s;
    const row = this.allocRow();
    this.slotKeys[2 * s] = lo;
    this.slotKeys[2 * s + 1] = hi;
    this.slotRow[s] = row;
    this.live++;
    const base = row * d;
    for (let i = 0; i < d; i++) this.values[base + i] = src[at + i]!;
    // A new row's average starts at its first value: there is no history to blend with.
    if (this.ema) for (let i = 0; i < d; i++) this.ema[base + i] = src[at + i]!;
  }

  /** Removes a row; true when it existed. */
  delete(lo: number, hi: number): boolean {
    let s = this.findSlot(lo >>> 0, hi >>> 0);
    if (s < 0) return false;
    this.freeRows.push(this.slotRow[s]!);
    this.slotRow[s] = -1;
    this.live--;
    // Backward-shift: move later entries of the probe run into the hole so lookups stay correct.
    let next = (s + 1) & this.mask;
    while (this.slotRow[next]! >= 0) {
      const home = keyDigest(this.slotKeys[2 * next]!, this.slotKeys[2 * next + 1]!) & this.mask;
      // The entry at `next` may move to `s` only if its home is not in the cyclic range (s, next].
      const inRange = s <= next ? home > s && home <= next : home > s || home <= next;
      if (!inRange) {
        this.slotKeys[2 * s] = this.slotKeys[2 * next]!;
        this.slotKeys[2 * s + 1] = this.slotKeys[2 * next + 1]!;
        this.slotRow[s] = this.slotRow[next]!;
        this.slotRow[next] = -1;
        s = next;
      }
      next = (next + 1) & this.mask;
    }
    return true;
  }

  /** Calls `fn(lo, hi, row)` for every row. */
  forEach(fn: (lo: number, hi: number, row: number) => void): void {
    for (let s = 0; s < this.slotRow.length; s++) {
      const r = this.slotRow[s]!;
      if (r >= 0) fn(this.slotKeys[2 * s]!, this.slotKeys[2 * s + 1]!, r);
    }
  }

  private allocRow(): number {
    const free = this.freeRows.pop();
    if (free !== undefined) return free;
    if (this.highWater === this.rowCap) {
      this.rowCap *= 2;
      const v = new Float32Array(this.rowCap * this.dim);
      v.set(this.values);
      this.values = v;
      if (this.ema) {
        const e = new Float32Array(this.rowCap * this.dim);
        e.set(this.ema);
        this.ema = e;
      }
    }
    return this.highWater++;
  }

  private rehash(cap: number): void {
    const oldKeys = this.slotKeys;
    const oldRow = this.slotRow;
    this.slotKeys = new Uint32Array(cap * 2);
    this.slotRow = new Int32Array(cap).fill(-1);
    this.mask = cap - 1;
    for (let s = 0; s < oldRow.length; s++) {
      const r = oldRow[s]!;
      if (r < 0) continue;
      const lo = oldKeys[2 * s]!;
      const hi = oldKeys[2 * s + 1]!;
      const t = ~this.findSlot(lo, hi);
      this.slotKeys[2 * t] = lo;
      this.slotKeys[2 * t + 1] = hi;
      this.slotRow[t] = r;
    }
  }
}
