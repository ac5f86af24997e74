/**
 * Feature admission (Monolith-style): a row is created only after its id was seen `minCount`
 * times. Counting every candidate id exactly would need a map entry per id — the memory the
 * threshold is meant to save — so counts live in a bounded count-min sketch with conservative
 * update: memory is fixed (depth × width × 2 bytes), estimates never undercount, and an id is
 * admitted early only when it collides in every row of the sketch.
 *
 * Counts decay: every `decayTicks` all counters halve, so an id needs about `minCount`
 * sightings within a period or two, not over the table's whole life. Without it, ids seen once a
 * month were all admitted eventually, and the sketch filled until collisions admitted anything.
 * The decay clock is not checkpointed (the format is unchanged): after a restore, the first
 * period starts at the first push.
 */
export class AdmissionSketch {
  readonly depth = 4;
  readonly width: number;
  private readonly mask: number;
  /** depth × width saturating counters. */
  readonly counts: Uint16Array;

  /** Tick (100 ms units, see row-store.ts) of the last halving; 0 until the first {@link advance}. */
  private decayedAt = 0;
  /** Halvings so far. */
  halvings = 0;

  /** `decayTicks` 0 never decays. */
  constructor(
    width = 1 << 18,
    counts?: Uint16Array,
    readonly decayTicks = 0,
  ) {
    this.width = 1 << Math.ceil(Math.log2(Math.max(16, width)));
    this.mask = this.width - 1;
    this.counts = counts ?? new Uint16Array(this.depth * this.width);
    if (this.counts.length !== this.depth * this.width) throw new Error('sketch size mismatch');
  }

  get bytes(): number {
    return this.counts.byteLength;
  }

  private slot(lo: number, hi: number, d: number): number {
    let h = (lo ^ Math.imul(hi + d * 0x7f4a7c15, 0x9e3779b1) ^ Math.imul(d + 1, 0x85ebca6b)) >>> 0;
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return d * this.width + (h & this.mask);
  }

  /**
   * Halves every counter once per `decayTicks` elapsed since the last halving (several periods
   * at once after a quiet spell). O(depth × width) per halving: ~1 ms at the default width.
   */
  advance(tick: number): void {
    if (this.decayTicks <= 0) return;
    if (this.decayedAt === 0 || tick < this.decayedAt) {
      this.decayedAt = tick;
      return;
    }
    const periods = Math.floor((tick - this.decayedAt) / this.decayTicks);
    if (periods === 0) return;
    this.decayedAt += periods * this.decayTicks;
    this.halvings += periods;
    const shift = Math.min(16, periods);
    const c = this.counts;
    for (let i = 0; i < c.length; i++) c[i] = c[i]! >>> shift;
  }

  /** Adds `n` sightings of (lo, hi) and returns the new estimate. */
  add(lo: number, hi: number, n: number): number {
    let est = 0xffff;
    for (let d = 0; d < this.depth; d++) est = Math.min(est, this.counts[this.slot(lo, hi, d)]!);
    const target = Math.min(0xffff, est + n);
    // Conservative update: raise only the counters below the new estimate.
    for (let d = 0; d < this.depth; d++) {
      const s = this.slot(lo, hi, d);
      if (this.counts[s]! < target) this.counts[s] = target;
    }
    return target;
  }

  estimate(lo: number, hi: number): number {
    let est = 0xffff;
    for (let d = 0; d < this.depth; d++) est = Math.min(est, this.counts[this.slot(lo, hi, d)]!);
    return est;
  }
}
