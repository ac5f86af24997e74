/**
 * Assigns dense indexes 0..u-1 to 64-bit ids (lo, hi) in first-seen order: an open-addressing
 * table over u32 pairs, so a batch's unique keys need no string or BigInt per lookup.
 */
export class KeyIndex {
  private table: Int32Array;
  private mask: number;
  private lo: Uint32Array;
  private hi: Uint32Array;
  private n = 0;

  constructor(capacity = 1024) {
    const size = pow2(capacity * 2);
    this.table = new Int32Array(size).fill(-1);
    this.mask = size - 1;
    this.lo = new Uint32Array(capacity);
    this.hi = new Uint32Array(capacity);
  }

  /** Unique keys so far. */
  get size(): number {
    return this.n;
  }

  /** Forgets all keys; keeps the memory when it is big enough for `capacity`. */
  reset(capacity: number): void {
    this.n = 0;
    if (capacity > this.lo.length) {
      const size = pow2(capacity * 2);
      this.table = new Int32Array(size).fill(-1);
      this.mask = size - 1;
      this.lo = new Uint32Array(capacity);
      this.hi = new Uint32Array(capacity);
    } else {
      this.table.fill(-1);
    }
  }

  /** The index of (lo, hi), adding it when new. At most `capacity` keys. */
  add(lo: number, hi: number): number {
    let h = (Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b) >>> 0) & this.mask;
    for (;;) {
      const at = this.table[h]!;
      if (at === -1) {
        const i = this.n++;
        this.lo[i] = lo;
        this.hi[i] = hi;
        this.table[h] = i;
        return i;
      }
      if (this.lo[at] === lo && this.hi[at] === hi) return at;
      h = (h + 1) & this.mask;
    }
  }

  /** The unique keys, interleaved [lo, hi, ...], in index order (a copy). */
  keys(): Uint32Array {
    const out = new Uint32Array(this.n * 2);
    for (let i = 0; i < this.n; i++) {
      out[2 * i] = this.lo[i]!;
      out[2 * i + 1] = this.hi[i]!;
    }
    return out;
  }
}

function pow2(n: number): number {
  let p = 16;
  while (p < n) p *= 2;
  return p;
}
