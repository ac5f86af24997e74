/**
 * A log-bucketed histogram of non-negative values (milliseconds here): 8 buckets per octave, so a
 * quantile is within ~9% of the true value, recording is O(1) with no allocation, and the bucket
 * edges at powers of two give Prometheus `le` buckets without re-binning.
 */
export class LogHistogram {
  /** Smallest resolved value; everything below lands in bucket 0. */
  readonly min: number;
  private readonly perOctave = 8;
  private readonly counts: Float64Array;
  private n = 0;
  private total = 0;
  private maxSeen = 0;

  constructor(min = 0.0625, octaves = 26) {
    this.min = min;
    this.counts = new Float64Array(octaves * this.perOctave + 1);
  }

  /** Records one value; negative and non-finite values are ignored by the caller's contract. */
  record(v: number): void {
    if (!(v >= 0)) return;
    const last = this.counts.length - 1;
    let i = v <= this.min ? 0 : Math.ceil(Math.log2(v / this.min) * this.perOctave);
    if (i > last) i = last;
    this.counts[i]! += 1;
    this.n++;
    this.total += v;
    if (v > this.maxSeen) this.maxSeen = v;
  }

  get count(): number {
    return this.n;
  }
  get sum(): number {
    return this.total;
  }
  get max(): number {
    return this.maxSeen;
  }

  /** Upper edge of bucket i: every value in it is ≤ this. */
  private edge(i: number): number {
    return this.min * 2 ** (i / this.perOctave);
  }

  /** The q-quantile (0..1) as the upper edge of its bucket, capped by the largest value; 0 when empty. */
  quantile(q: number): number {
    if (this.n === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.n));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(this.edge(i), this.maxSeen);
    }
    return this.maxSeen;
  }

  reset(): void {
    this.counts.fill(0);
    this.n = 0;
    this.total = 0;
    this.maxSeen = 0;
  }

  /** Adds another histogram with the same shape into this one. */
  merge(o: LogHistogram): void {
    for (let i = 0; i < this.counts.length; i++) this.counts[i]! += o.counts[i] ?? 0;
    this.n += o.n;
    this.total += o.total;
    if (o.maxSeen > this.maxSeen) this.maxSeen = o.maxSeen;
  }

  /**
   * Prometheus exposition lines for a histogram metric named `name` (unit in the name, e.g.
   * `_milliseconds`): cumulative `le` buckets at each octave, `_sum` and `_count`.
   */
  prometheus(name: string, help: string, labels = ''): string {
    const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
    const lab = (extra: string) => `{${[labels, extra].filter(Boolean).join(',')}}`;
    let cum = 0;
    for (let i = 0; i < this.counts.length; i++) {
      cum += this.counts[i]!;
      if (i % this.perOctave === 0) lines.push(`${name}_bucket${lab(`le="${this.edge(i)}"`)} ${cum}`);
    }
    lines.push(`${name}_bucket${lab('le="+Inf"')} ${this.n}`);
    lines.push(`${name}_sum${labels ? `{${labels}}` : ''} ${this.total}`);
    lines.push(`${name}_count${labels ? `{${labels}}` : ''} ${this.n}`);
    return lines.join('\n') + '\n';
  }
}

/**
 * Quantiles over roughly the last `windowMs`: two histograms rotate, so a status read covers
 * between one and two windows of recent values while a cumulative one feeds Prometheus.
 */
export class WindowedHistogram {
  readonly cumulative = new LogHistogram();
  private current = new LogHistogram();
  private previous = new LogHistogram();
  private rotatedAt: number;

  constructor(
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {
    this.rotatedAt = now();
  }

  record(v: number): void {
    this.rotate();
    this.current.record(v);
    this.cumulative.record(v);
  }

  private rotate(): void {
    const t = this.now();
    if (t - this.rotatedAt < this.windowMs) return;
    const old = this.previous;
    old.reset();
    this.previous = this.current;
    this.current = old;
    // A long quiet period leaves nothing recent at all.
    if (t - this.rotatedAt >= 2 * this.windowMs) this.previous.reset();
    this.rotatedAt = t;
  }

  /** Quantiles of the recent window (p50, p99, count). */
  recent(): { p50: number; p99: number; count: number } {
    this.rotate();
    const h = new LogHistogram();
    h.merge(this.previous);
    h.merge(this.current);
    return { p50: h.quantile(0.5), p99: h.quantile(0.99), count: h.count };
  }
}
