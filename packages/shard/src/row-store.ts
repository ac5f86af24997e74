import { FreshetError } from '@freshet/protocol';

/**
 * Rows of one table keyed by 64-bit ids, in typed-array slabs with an open-addressing index.
 *
 * Layout of a row (one stride of 32-bit words, in fixed-size chunks of one ArrayBuffer each,
 * viewed both as Float32Array and Uint32Array):
 *
 *   [lo][hi][step][lastSeen][w × dim][optimizer state × stateDim]
 *
 * The key and metadata sit in the row itself, so a lookup touches the index slot and then the
 * row it needs anyway: no separate key array (one cache miss fewer per random row). Chunks are
 * never reallocated, so the table grows by appending a chunk and never copies values; the index
 * doubles by incremental migration (a few rows per insert), so growth never stops the shard.
 *
 * Index slot: 0 = empty, else (row + 1) in the low 26 bits and 6 bits of the key's hash above
 * them, so most probes of a collision chain are rejected without touching the row.
 *
 * A free row has lastSeen = 0 (ticks start at 1); freed rows are reused through a free list.
 */

/** Words of metadata at the start of every row. */
export const META_WORDS = 4;
const OFF_LO = 0;
const OFF_HI = 1;
const OFF_STEP = 2;
const OFF_SEEN = 3;

const ROW_BITS = 26;
const ROW_MASK = (1 << ROW_BITS) - 1;
/** Rows per table per shard (the index packs row + 1 into 26 bits). */
export const MAX_ROWS = ROW_MASK - 1;
const MAX_LOAD = 0.75;
/** Rows moved to the new index per insert while a migration runs (> 1 so it ends before the next). */
const MIGRATE_PER_OP = 8;

/** Last-seen times are 100 ms ticks since 2024-01-01 (u32: good until 2037); 0 marks a free row. */
export const TICK_MS = 100;
const TICK_EPOCH_MS = Date.UTC(2024, 0, 1);
/** The last-seen tick of a wall-clock time. */
export function tickOf(ms: number): number {
  return Math.max(1, Math.floor((ms - TICK_EPOCH_MS) / TICK_MS));
}

/** Hash used by the index (not by routing): murmur3 finaliser over both halves. */
function hashKey(lo: number, hi: number): number {
  let h = (lo ^ Math.imul(hi, 0x9e3779b1)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export interface RowStoreOptions {
  dim: number;
  /** Optimizer state words per row (Adam 2·dim, Adagrad dim, FTRL 2·dim, SGD 0). */
  stateDim: number;
  /** Rows per chunk, a power of two; small chunks waste less, big ones cost fewer arrays. */
  chunkRows?: number;
  /** Initial index slots (power of two). */
  initialSlots?: number;
}

export class RowStore {
  readonly dim: number;
  readonly stateDim: number;
  /** Words per row. */
  readonly stride: number;
  readonly chunkShift: number;
  readonly chunkMask: number;
  /** Chunk views; row r lives in chunk r >>> chunkShift at word (r & chunkMask) · stride. */
  readonly f: Float32Array[] = [];
  readonly u: Uint32Array[] = [];

  private index: Uint32Array;
  private mask: number;
  private old: Uint32Array | undefined;
  private oldMask = 0;
  /** Rows below `migrateEnd` not yet re-inserted into the new index start at `migrateNext`. */
  private migrateNext = 0;
  private migrateEnd = 0;
  private used = 0; // slots in use in `index`

  /** Rows ever allocated (live + free); row ids are < rowsEnd. */
  private rowsEnd = 0;
  private liveRows = 0;
  private free: Int32Array = new Int32Array(0);
  private freeCount = 0;

  /** Copy-on-write snapshot in progress (checkpoints): chunks copied before their first write. */
  private snap: { chunks: (Uint32Array | undefined)[]; n: number; end: number; next: number } | undefined;

  constructor(o: RowStoreOptions) {
    this.dim = o.dim;
    this.stateDim = o.stateDim;
    this.stride = META_WORDS + o.dim + o.stateDim;
    const chunkRows = o.chunkRows ?? 4096;
    if (chunkRows < 1 || (chunkRows & (chunkRows - 1)) !== 0) throw new Error('chunkRows must be 2^k');
    this.chunkShift = Math.log2(chunkRows);
    this.chunkMask = chunkRows - 1;
    const slots = Math.max(16, o.initialSlots ?? 1024);
    this.index = new Uint32Array(1 << Math.ceil(Math.log2(slots)));
    this.mask = this.index.length - 1;
  }

  /** Live rows. */
  get size(): number {
    return this.liveRows;
  }
  /** Row ids in use or free are below this (iteration bound for snapshots and checkpoints). */
  get end(): number {
    return this.rowsEnd;
  }
  /** Bytes actually allocated: chunks, index (both while migrating) and the free list. */
  get bytes(): number {
    let b = 0;
    for (const c of this.u) b += c.byteLength;
    b += this.index.byteLength + (this.old?.byteLength ?? 0) + this.free.byteLength;
    return b;
  }
  get migrating(): boolean {
    return this.old !== undefined;
  }

  /** Word offset of row `r` inside its chunk. */
  offset(r: number): number {
    return (r & this.chunkMask) * this.stride;
  }
  /** Word offset of row `r`'s values inside its chunk. */
  valueOffset(r: number): number {
    return (r & this.chunkMask) * this.stride + META_WORDS;
  }
  chunkF(r: number): Float32Array {
    return this.f[r >>> this.chunkShift]!;
  }
  chunkU(r: number): Uint32Array {
    return this.u[r >>> this.chunkShift]!;
  }
  isLive(r: number): boolean {
    return r < this.rowsEnd && this.u[r >>> this.chunkShift]![this.offset(r) + OFF_SEEN] !== 0;
  }
  keyLo(r: number): number {
    return this.u[r >>> this.chunkShift]![this.offset(r) + OFF_LO]!;
  }
  keyHi(r: number): number {
    return this.u[r >>> this.chunkShift]![this.offset(r) + OFF_HI]!;
  }
  step(r: number): number {
    return this.u[r >>> this.chunkShift]![this.offset(r) + OFF_STEP]!;
  }
  lastSeen(r: number): number {
    return this.u[r >>> this.chunkShift]![this.offset(r) + OFF_SEEN]!;
  }
  setLastSeen(r: number, tick: number): void {
    if (this.snap !== undefined) this.cow(r);
    this.u[r >>> this.chunkShift]![this.offset(r) + OFF_SEEN] = tick || 1;
  }
  /** The largest step count of any live row (0 when empty). */
  maxStep(): number {
    let m = 0;
    for (let r = 0; r < this.rowsEnd; r++) if (this.isLive(r)) m = Math.max(m, this.step(r));
    return m;
  }
  /** Increments and returns the row's update count. */
  bumpStep(r: number): number {
    if (this.snap !== undefined) this.cow(r);
    const u = this.u[r >>> this.chunkShift]!;
    const o = this.offset(r) + OFF_STEP;
    return (u[o] = (u[o]! + 1) >>> 0);
  }

  private probe(index: Uint32Array, mask: number, lo: number, hi: number, h: number): number {
    const tag = (h >>> ROW_BITS) << ROW_BITS;
    const shift = this.chunkShift;
    const cmask = this.chunkMask;
    const stride = this.stride;
    let s = h & mask;
    for (;;) {
      const e = index[s]!;
      if (e === 0) return -1;
      if ((e & ~ROW_MASK) >>> 0 === tag >>> 0) {
        const r = (e & ROW_MASK) - 1;
        const u = this.u[r >>> shift]!;
        const o = (r & cmask) * stride;
        if (u[o] === lo && u[o + 1] === hi) return r;
      }
      s = (s + 1) & mask;
    }
  }

  /** Row of key (lo, hi), or -1. */
  find(lo: number, hi: number): number {
    const h = hashKey(lo, hi);
    const r = this.probe(this.index, this.mask, lo, hi, h);
    if (r >= 0 || this.old === undefined) return r;
    return this.probe(this.old, this.oldMask, lo, hi, h);
  }

  private readonly blockSlot = new Uint32Array(64);
  private readonly blockHash = new Uint32Array(64);

  /**
   * Looks up keys [from, to) (at most 64) into out[i] (−1 when absent). Two passes: first every
   * key's home slot is loaded, then rows are verified. The loads of a pass do not depend on each
   * other, so the CPU overlaps their cache misses instead of waiting for each probe in turn.
   */
  findBlock(keys: Uint32Array, from: number, to: number, out: Int32Array): void {
    if (this.old !== undefined || to - from > 64) {
      for (let i = from; i < to; i++) out[i] = this.find(keys[2 * i]!, keys[2 * i + 1]!);
      return;
    }
    const index = this.index;
    const mask = this.mask;
    const hs = this.blockHash;
    const es = this.blockSlot;
    for (let i = from; i < to; i++) {
      const h = hashKey(keys[2 * i]!, keys[2 * i + 1]!);
      hs[i - from] = h;
      es[i - from] = index[h & mask]!;
    }
    const shift = this.chunkShift;
    const cmask = this.chunkMask;
    const stride = this.stride;
    for (let i = from; i < to; i++) {
      const lo = keys[2 * i]!;
      const hi = keys[2 * i + 1]!;
      const h = hs[i - from]!;
      const e = es[i - from]!;
      if (e === 0) {
        out[i] = -1;
        continue;
      }
      if ((e & ~ROW_MASK) >>> 0 === ((h >>> ROW_BITS) << ROW_BITS) >>> 0) {
        const r = (e & ROW_MASK) - 1;
        const u = this.u[r >>> shift]!;
        const o = (r & cmask) * stride;
        if (u[o] === lo && u[o + 1] === hi) {
          out[i] = r;
          continue;
        }
      }
      out[i] = this.probe(index, mask, lo, hi, h);
    }
  }

  private place(index: Uint32Array, mask: number, r: number, h: number): void {
    let s = h & mask;
    while (index[s] !== 0) s = (s + 1) & mask;
    index[s] = (((h >>> ROW_BITS) << ROW_BITS) | (r + 1)) >>> 0;
  }

  /**
   * Creates the row for a key known to be absent and returns it. Values and state are zeroed;
   * the caller initialises them.
   */
  insert(lo: number, hi: number, tick: number): number {
    if (this.old !== undefined) this.migrate(MIGRATE_PER_OP);
    else if (this.used + 1 > this.index.length * MAX_LOAD) this.beginGrow();
    let r: number;
    if (this.freeCount > 0) {
      r = this.free[--this.freeCount]!;
    } else {
      if (this.rowsEnd >= MAX_ROWS) throw new FreshetError('OVERSIZE', `table full (${MAX_ROWS} rows)`);
      r = this.rowsEnd++;
      const c = r >>> this.chunkShift;
      if (c >= this.u.length) {
        const buf = new ArrayBuffer((this.chunkMask + 1) * this.stride * 4);
        this.f.push(new Float32Array(buf));
        this.u.push(new Uint32Array(buf));
      }
    }
    if (this.snap !== undefined) this.cow(r);
    const u = this.u[r >>> this.chunkShift]!;
    const o = this.offset(r);
    u.fill(0, o, o + this.stride);
    u[o + OFF_LO] = lo;
    u[o + OFF_HI] = hi;
    u[o + OFF_SEEN] = tick || 1;
    this.place(this.index, this.mask, r, hashKey(lo, hi));
    this.used++;
    this.liveRows++;
    return r;
  }

  private beginGrow(): void {
    this.old = this.index;
    this.oldMask = this.mask;
    this.index = new Uint32Array(this.old.length * 2);
    this.mask = this.index.length - 1;
    this.used = 0;
    this.migrateNext = 0;
    this.migrateEnd = this.rowsEnd;
  }

  /**
   * Moves up to `n` rows from the old index into the new one; drops the old index when done.
   * Rows created during the migration are inserted into the new index directly, so a row id
   * below `migrateEnd` may already be there (a freed row reused): insert only if absent.
   */
  migrate(n: number): void {
    if (this.old === undefined) return;
    const end = Math.min(this.migrateEnd, this.migrateNext + n);
    for (let r = this.migrateNext; r < end; r++) {
      if (!this.isLive(r)) continue;
      const lo = this.keyLo(r);
      const hi = this.keyHi(r);
      const h = hashKey(lo, hi);
      if (this.probe(this.index, this.mask, lo, hi, h) >= 0) continue;
      this.place(this.index, this.mask, r, h);
      this.used++;
    }
    this.migrateNext = end;
    if (end >= this.migrateEnd) this.old = undefined;
  }

  /** Linear-probing deletion by backward shift: no tombstones, chains stay short. */
  private unindex(index: Uint32Array, mask: number, r: number, h: number): boolean {
    let s = h & mask;
    for (;;) {
      const e = index[s]!;
      if (e === 0) return false;
      if ((e & ROW_MASK) - 1 === r) break;
      s = (s + 1) & mask;
    }
    let hole = s;
    let j = s;
    for (;;) {
      j = (j + 1) & mask;
      const e = index[j]!;
      if (e === 0) break;
      const rr = (e & ROW_MASK) - 1;
      const home = hashKey(this.keyLo(rr), this.keyHi(rr)) & mask;
      // Move e into the hole unless its home lies cyclically in (hole, j].
      const between = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (!between) {
        index[hole] = e;
        hole = j;
      }
    }
    index[hole] = 0;
    return true;
  }

  /** Removes a live row: unindexes it, marks it free, recycles its id. */
  remove(r: number): void {
    if (!this.isLive(r)) return;
    const h = hashKey(this.keyLo(r), this.keyHi(r));
    if (this.unindex(this.index, this.mask, r, h)) this.used--;
    if (this.old !== undefined) this.unindex(this.old, this.oldMask, r, h);
    if (this.snap !== undefined) this.cow(r);
    this.u[r >>> this.chunkShift]![this.offset(r) + OFF_SEEN] = 0;
    if (this.freeCount >= this.free.length) {
      const bigger = new Int32Array(Math.max(64, this.free.length * 2));
      bigger.set(this.free);
      this.free = bigger;
    }
    this.free[this.freeCount++] = r;
    this.liveRows--;
  }

  /**
   * Restores raw chunk words (from a checkpoint) and rebuilds the index and free list.
   * `rows` is the row-id bound (`end`) the words were taken at.
   */
  restore(chunks: Uint32Array[], rows: number): void {
    this.f.length = 0;
    this.u.length = 0;
    for (const c of chunks) {
      const buf = new ArrayBuffer((this.chunkMask + 1) * this.stride * 4);
      const u = new Uint32Array(buf);
      u.set(c.subarray(0, Math.min(c.length, u.length)));
      this.u.push(u);
      this.f.push(new Float32Array(buf));
    }
    this.rowsEnd = rows;
    this.liveRows = 0;
    this.freeCount = 0;
    this.old = undefined;
    let live = 0;
    for (let r = 0; r < rows; r++) if (this.isLive(r)) live++;
    let slots = 16;
    while (live + 1 > slots * MAX_LOAD * 0.75) slots *= 2;
    this.index = new Uint32Array(slots);
    this.mask = slots - 1;
    this.used = 0;
    for (let r = 0; r < rows; r++) {
      if (this.isLive(r)) {
        this.place(this.index, this.mask, r, hashKey(this.keyLo(r), this.keyHi(r)));
        this.used++;
        this.liveRows++;
      } else {
        if (this.freeCount >= this.free.length) {
          const bigger = new Int32Array(Math.max(64, this.free.length * 2));
          bigger.set(this.free);
          this.free = bigger;
        }
        this.free[this.freeCount++] = r;
      }
    }
  }

  /**
   * Starts a copy-on-write snapshot of the rows as they are now: from here on, a chunk is copied
   * before its first write, and {@link snapshotStep} copies the others in the background. No
   * pause proportional to the table size (a full copy of 1M rows took ~200 ms).
   */
  beginSnapshot(): void {
    const n = this.rowsEnd === 0 ? 0 : ((this.rowsEnd - 1) >>> this.chunkShift) + 1;
    this.snap = { chunks: new Array<Uint32Array | undefined>(n), n, end: this.rowsEnd, next: 0 };
  }

  /** Copies chunk c into the snapshot if it is not there yet (call before writing to it). */
  private cow(r: number): void {
    const sn = this.snap;
    if (sn === undefined) return;
    const c = r >>> this.chunkShift;
    if (c < sn.n && sn.chunks[c] === undefined) sn.chunks[c] = this.u[c]!.slice();
  }

  /**
   * Copies up to `k` more chunks into the snapshot. Returns the snapshot (and ends it) once
   * every chunk is copied, else undefined.
   */
  snapshotStep(k: number): { chunks: Uint32Array[]; end: number } | undefined {
    const sn = this.snap;
    if (sn === undefined) throw new Error('no snapshot in progress');
    let done = 0;
    while (sn.next < sn.n && done < k) {
      if (sn.chunks[sn.next] === undefined) {
        sn.chunks[sn.next] = this.u[sn.next]!.slice();
        done++;
      }
      sn.next++;
    }
    if (sn.next < sn.n) return undefined;
    this.snap = undefined;
    return { chunks: sn.chunks as Uint32Array[], end: sn.end };
  }

  /** Copies of the chunk words up to `end` (a consistent snapshot for a checkpoint). */
  copyChunks(): Uint32Array[] {
    const n = this.rowsEnd === 0 ? 0 : ((this.rowsEnd - 1) >>> this.chunkShift) + 1;
    return this.u.slice(0, n).map((c) => c.slice());
  }
}
