import { META_WORDS, type RowStore } from './row-store.js';

/** What a table must offer for a push to be taken back (implemented by ParamTable). */
export interface UndoTarget {
  readonly store: RowStore;
  /** Writes a saved row back; `wasDirty` false clears the dirty bit the push set. */
  restoreRow(r: number, words: Uint32Array, at: number, wasDirty: boolean): void;
  /** Removes a row the push created (no tombstone: no delta ever carried it). */
  dropCreatedRow(r: number): void;
  /** Puts back the table's per-push counters and truncates its delta staging log. */
  rewindPush(steps: number, staged: number, created: number): void;
}

const CREATED = 1;
const WAS_DIRTY = 2;
/** Words per log entry: table, row, flags, offset of the saved words. */
const ENTRY = 4;

/**
 * The undo log of one push: every row the push touches (weights, optimizer state and row
 * metadata) is copied here just before the optimizer writes it, and the rows it creates are
 * noted. When the result turns out non-finite — a finite gradient can still overflow float32
 * state, e.g. an FTRL or Adagrad accumulator scaled by the push's example count — the whole
 * push is taken back from this log, so a push stays all-or-nothing after the apply too.
 *
 * Copies only the rows a push touches, right when the kernel is about to pull them into cache
 * anyway, into buffers reused from push to push (they grow to the largest push and stay).
 */
export class PushUndo {
  private ent = new Int32Array(ENTRY * 1024);
  private n = 0;
  private words = new Uint32Array(1 << 16);
  private w = 0;
  /** Per table entered: table, steps, staged, created (at the start of the push). */
  private marks: number[] = [];

  /** Starts a new push (the previous one was applied whole, or rolled back). */
  reset(): void {
    this.n = 0;
    this.w = 0;
    this.marks.length = 0;
  }

  get bytes(): number {
    return this.ent.byteLength + this.words.byteLength;
  }

  /** Rows logged in the current push (tests, status). */
  get rows(): number {
    return this.n;
  }

  /** Records a table's counters before the push changes them. */
  beginTable(t: number, steps: number, staged: number, created: number): void {
    this.marks.push(t, steps, staged, created);
  }

  private entry(t: number, r: number, flags: number, at: number): void {
    if ((this.n + 1) * ENTRY > this.ent.length) {
      const e = new Int32Array(this.ent.length * 2);
      e.set(this.ent);
      this.ent = e;
    }
    const o = this.n * ENTRY;
    this.ent[o] = t;
    this.ent[o + 1] = r;
    this.ent[o + 2] = flags;
    this.ent[o + 3] = at;
    this.n++;
  }

  /** Copies row r of table t (all its words) before the push writes it. */
  saveRow(t: number, store: RowStore, r: number, wasDirty: boolean): void {
    const stride = store.stride;
    if (this.w + stride > this.words.length) {
      const b = new Uint32Array(Math.max(this.words.length * 2, this.w + stride));
      b.set(this.words.subarray(0, this.w));
      this.words = b;
    }
    const u = store.u[r >>> store.chunkShift]!;
    const o = (r & store.chunkMask) * stride;
    const dst = this.words;
    const at = this.w;
    for (let k = 0; k < stride; k++) dst[at + k] = u[o + k]!;
    this.w += stride;
    this.entry(t, r, wasDirty ? WAS_DIRTY : 0, at);
  }

  /** Notes that the push created row r of table t. */
  createdRow(t: number, r: number): void {
    this.entry(t, r, CREATED, -1);
  }

  /**
   * Takes the push back: rows restored newest entry first (so a row logged twice ends with its
   * oldest copy, the one from before the push), created rows removed, counters rewound.
   */
  rollback(tables: readonly UndoTarget[]): void {
    const ent = this.ent;
    for (let i = this.n - 1; i >= 0; i--) {
      const o = i * ENTRY;
      const tab = tables[ent[o]!]!;
      const flags = ent[o + 2]!;
      if (flags & CREATED) tab.dropCreatedRow(ent[o + 1]!);
      else tab.restoreRow(ent[o + 1]!, this.words, ent[o + 3]!, (flags & WAS_DIRTY) !== 0);
    }
    const m = this.marks;
    for (let i = m.length - 4; i >= 0; i -= 4) tables[m[i]!]!.rewindPush(m[i + 1]!, m[i + 2]!, m[i + 3]!);
    this.reset();
  }
}

/**
 * The first of rows[from, to) whose weights or optimizer state hold a NaN or ±Infinity, as
 * { i, k } (k: the word's index among the row's values, weights first), or undefined. One
 * branch-free pass (x − x is 0 for finite x, NaN otherwise) over rows still in cache.
 */
export function firstNonFinite(
  store: RowStore,
  rows: Int32Array,
  from: number,
  to: number,
): { i: number; k: number } | undefined {
  const shift = store.chunkShift;
  const cmask = store.chunkMask;
  const stride = store.stride;
  // four independent sums: one would wait on each add's latency, 48 times a row
  let a0 = 0;
  let a1 = 0;
  let a2 = 0;
  let a3 = 0;
  for (let i = from; i < to; i++) {
    const r = rows[i]!;
    if (r < 0) continue;
    const f = store.f[r >>> shift]!;
    const end = (r & cmask) * stride + stride;
    let k = (r & cmask) * stride + META_WORDS;
    for (; k + 3 < end; k += 4) {
      const x0 = f[k]!;
      const x1 = f[k + 1]!;
      const x2 = f[k + 2]!;
      const x3 = f[k + 3]!;
      a0 += x0 - x0;
      a1 += x1 - x1;
      a2 += x2 - x2;
      a3 += x3 - x3;
    }
    for (; k < end; k++) {
      const x = f[k]!;
      a0 += x - x;
    }
  }
  if (a0 + a1 + a2 + a3 === 0) return undefined;
  // rare: find it for the reason
  for (let i = from; i < to; i++) {
    const r = rows[i]!;
    if (r < 0) continue;
    const f = store.f[r >>> shift]!;
    const o = (r & cmask) * stride + META_WORDS;
    for (let k = 0; k < stride - META_WORDS; k++) if (!Number.isFinite(f[o + k]!)) return { i, k };
  }
  return undefined;
}
