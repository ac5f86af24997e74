/**
 * Events per second over the last `seconds` whole seconds (a ring of per-second counts), so a
 * status read is O(seconds) and recording is O(1) with no allocation.
 */
export class RateMeter {
  private readonly counts: Float64Array;
  private readonly stamps: Float64Array;

  constructor(
    private readonly seconds = 10,
    private readonly now: () => number = Date.now,
  ) {
    this.counts = new Float64Array(seconds);
    this.stamps = new Float64Array(seconds).fill(-1);
  }

  mark(n = 1): void {
    const sec = Math.floor(this.now() / 1000);
    const i = sec % this.seconds;
    if (this.stamps[i] !== sec) {
      this.stamps[i] = sec;
      this.counts[i] = 0;
    }
    this.counts[i]! += n;
  }

  /** Mean rate over the completed seconds of the window (the current partial second excluded). */
  perSecond(): number {
    const sec = Math.floor(this.now() / 1000);
    let total = 0;
    for (let i = 0; i < this.seconds; i++) {
      const s = this.stamps[i]!;
      if (s < sec && s >= sec - (this.seconds - 1)) total += this.counts[i]!;
    }
    return total / (this.seconds - 1);
  }
}
