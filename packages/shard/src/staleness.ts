import { FreshetError, type StalenessSpec } from '@freshet/protocol';

/**
 * Staleness τ of a push = shard versions applied between the pull its gradient was computed on
 * (`base`) and now. Policies per table:
 *  - none:   apply as is.
 *  - reject: τ > bound → the whole push is rejected with STALE (the worker re-pulls).
 *  - scale:  learning rate × 1/(1+τ) (Zhang et al., IJCAI'16) beyond a tolerance: ×(1+t)/(1+τ) for τ > t.
 *  - dc:     DC-ASGD, g + λ·g⊙g⊙(w − w_base), with w_base the values this worker pulled,
 *            kept per worker by {@link DcBackups}.
 *  - ssp:    applied as is; the bound is enforced at pull time by {@link SspGate}.
 */

/** Default display bounds of {@link TauHistogram.buckets} (versions). */
export const TAU_BUCKET_BOUNDS: readonly number[] = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/** τ histogram: exact buckets for 0..127, then one bucket per power of two. */
export class TauHistogram {
  private readonly exact = new Float64Array(128);
  private readonly log = new Float64Array(33);
  private n = 0;
  private maxSeen = 0;

  record(tau: number): void {
    this.n++;
    if (tau > this.maxSeen) this.maxSeen = tau;
    if (tau < 128) this.exact[tau]!++;
    else this.log[Math.min(32, Math.floor(Math.log2(tau)))]!++;
  }
  get count(): number {
    return this.n;
  }
  get max(): number {
    return this.maxSeen;
  }
  /**
   * Counts per bucket for Prometheus-style display: `counts[i]` = records with
   * `bounds[i-1] < tau <= bounds[i]`, plus one last bucket above the last bound. Bounds are
   * exact up to 127 and powers of two above it (the resolution the histogram keeps).
   */
  buckets(bounds: readonly number[] = TAU_BUCKET_BOUNDS): { bounds: number[]; counts: number[] } {
    const counts = new Array<number>(bounds.length + 1).fill(0);
    const add = (tau: number, n: number) => {
      if (n === 0) return;
      let i = 0;
      while (i < bounds.length && tau > bounds[i]!) i++;
      counts[i]! += n;
    };
    for (let t = 0; t < 128; t++) add(t, this.exact[t]!);
    // A log bucket b holds [2^b, 2^(b+1)): file it under its top so no record is shown as
    // fresher than it was (with power-of-two bounds this is exact but for τ = 2^b itself).
    for (let b = 7; b < 33; b++) add(2 ** (b + 1) - 1, this.log[b]!);
    return { bounds: [...bounds], counts };
  }
  /** The q-quantile (0..1); log buckets report their lower bound. */
  quantile(q: number): number {
    if (this.n === 0) return 0;
    const want = Math.max(1, Math.ceil(q * this.n));
    let acc = 0;
    for (let t = 0; t < 128; t++) {
      acc += this.exact[t]!;
      if (acc >= want) return t;
    }
    for (let b = 7; b < 33; b++) {
      acc += this.log[b]!;
      if (acc >= want) return 2 ** b;
    }
    return this.maxSeen;
  }
}

/** The learning-rate multiplier and whether a push may be applied, for one table. */
export function stalenessScale(spec: StalenessSpec, tau: number): number {
  switch (spec.policy) {
    case 'reject':
      if (tau > spec.bound) {
        throw new FreshetError('STALE', `staleness ${tau} > bound ${spec.bound}; pull again`);
      }
      return 1;
    case 'scale':
      return scaleFor(spec, tau);
    default:
      return 1;
  }
}

/** The `scale` policy's multiplier: 1 up to the tolerance, then (1 + tolerance)/(1 + τ). */
export function scaleFor(spec: StalenessSpec, tau: number): number {
  // a spec stored before `tolerance` existed scales from τ = 1, as it did then
  const tolerance = spec.tolerance ?? 0;
  return tau <= tolerance ? 1 : (1 + tolerance) / (1 + tau);
}

interface Backup {
  version: number;
  table: number;
  dim: number;
  keys: Uint32Array;
  values: Float32Array;
  /** Open-addressing index over keys: slot → i + 1. */
  index: Int32Array;
}

function slotOf(lo: number, hi: number, mask: number): number {
  let h = (lo ^ Math.imul(hi, 0x9e3779b1)) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return h & mask;
}

/**
 * What DC-ASGD needs to be honest: the weights each worker's gradient was computed on. On a pull
 * from a named worker for a `dc` table, the shard keeps a copy of the values it returned (the
 * last `perWorker` pulls of each of at most `maxWorkers` workers, at most `maxRows` rows each).
 * A push whose (worker, base, table) matches a backup is compensated row by row; rows without a
 * backup (evicted backup, a pull by another process) get the plain gradient and are counted.
 */
export class DcBackups {
  private readonly byWorker = new Map<string, Backup[]>();
  /** Rows pushed under `dc` with no backup to compensate against. */
  uncompensated = 0;
  compensated = 0;

  constructor(
    private readonly maxWorkers = 64,
    private readonly perWorker = 4,
    private readonly maxRows = 1 << 18,
  ) {}

  get bytes(): number {
    let b = 0;
    for (const list of this.byWorker.values())
      for (const x of list) b += x.keys.byteLength + x.values.byteLength + x.index.byteLength;
    return b;
  }

  remember(
    worker: string,
    version: number,
    table: number,
    dim: number,
    keys: Uint32Array,
    values: Float32Array,
  ): void {
    const n = keys.length / 2;
    if (n === 0 || n > this.maxRows) return;
    let size = 16;
    while (size < n * 2) size *= 2;
    const index = new Int32Array(size);
    const mask = size - 1;
    for (let i = 0; i < n; i++) {
      let s = slotOf(keys[2 * i]!, keys[2 * i + 1]!, mask);
      while (index[s] !== 0) s = (s + 1) & mask;
      index[s] = i + 1;
    }
    let list = this.byWorker.get(worker);
    if (!list) {
      if (this.byWorker.size >= this.maxWorkers) {
        const oldest = this.byWorker.keys().next().value;
        if (oldest !== undefined) this.byWorker.delete(oldest);
      }
      list = [];
      this.byWorker.set(worker, list);
    }
    list.push({ version, table, dim, keys: keys.slice(), values: values.slice(), index });
    if (list.length > this.perWorker) list.shift();
  }

  /**
   * Returns g + λ·g⊙g⊙(w − w_base) as a new array (the input may be a view of a request).
   * `current(i, out, at)` writes row i's current weights into out at `at`, or returns false
   * when the row does not exist (its gradient is then left as is).
   */
  compensate(
    worker: string,
    base: number,
    table: number,
    dim: number,
    keys: Uint32Array,
    grads: Float32Array,
    lambda: number,
    current: (i: number, out: Float32Array, at: number) => boolean,
  ): Float32Array {
    const out = grads.slice();
    const n = keys.length / 2;
    const b = this.byWorker
      .get(worker)
      ?.find((x) => x.version === base && x.table === table && x.dim === dim);
    if (!b) {
      this.uncompensated += n;
      return out;
    }
    const mask = b.index.length - 1;
    const w = new Float32Array(dim);
    for (let i = 0; i < n; i++) {
      const lo = keys[2 * i]!;
      const hi = keys[2 * i + 1]!;
      let s = slotOf(lo, hi, mask);
      let j = -1;
      for (;;) {
        const e = b.index[s]!;
        if (e === 0) break;
        if (b.keys[2 * (e - 1)] === lo && b.keys[2 * (e - 1) + 1] === hi) {
          j = e - 1;
          break;
        }
        s = (s + 1) & mask;
      }
      if (j < 0 || !current(i, w, 0)) {
        this.uncompensated++;
        continue;
      }
      for (let k = 0; k < dim; k++) {
        const g = out[i * dim + k]!;
        out[i * dim + k] = g + lambda * g * g * (w[k]! - b.values[j * dim + k]!);
      }
      this.compensated++;
    }
    return out;
  }
}

/**
 * A clock this far below what a worker reported before means it restarted. Smaller steps back
 * are pushes of batches still in flight arriving after the next pull, not a restart.
 */
const RESTART_REGRESSION = 64;

interface Waiter {
  worker: string;
  clock: number;
  bound: number;
  resolve: () => void;
  reject: (e: FreshetError) => void;
  timer: NodeJS.Timeout;
}

/**
 * Stale Synchronous Parallel at the shard (Ho et al. 2013): a pull from a worker at clock c
 * waits while c − (slowest live worker's clock) > bound. Clocks arrive with pulls, pushes and
 * worker clock heartbeats; a worker unseen for `liveMs` no longer holds others back. A wait
 * longer than `timeoutMs` fails with TIMEOUT (retryable); waiters are bounded.
 *
 * A joining worker (first seen, back after `liveMs`, or restarted: its clock went backwards)
 * counts its batches from 0, but it pulls today's weights: it is admitted at the slowest live
 * worker's clock and its own clock is offset from there. Taken literally, its clock 0 made every
 * other worker wait until it had caught up thousands of batches: the cluster stalled.
 */
export class SspGate {
  /** Per live worker: its clock on the gate's scale, what it last reported, and the offset between. */
  private readonly clocks = new Map<
    string,
    { clock: number; reported: number; offset: number; seen: number }
  >();
  private readonly waiters = new Set<Waiter>();
  waits = 0;
  timeouts = 0;
  /** Workers admitted at the current clock (joined, returned or restarted). */
  joins = 0;

  constructor(
    private readonly liveMs: number,
    private readonly timeoutMs: number,
    private readonly maxWaiters = 1024,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Records a worker's clock and wakes pulls that may go now; returns the clock on the gate's
   * scale (see the class comment: a joining worker starts at the slowest live clock).
   */
  observe(worker: string, clock: number): number {
    const now = this.now();
    let c = this.clocks.get(worker);
    if (c && now - c.seen > this.liveMs) {
      this.clocks.delete(worker);
      c = undefined;
    }
    if (!c) {
      const floor = this.slowest();
      const offset = floor === Infinity ? 0 : Math.max(0, floor - clock);
      c = { clock: clock + offset, reported: clock, offset, seen: now };
      this.clocks.set(worker, c);
      if (floor !== Infinity) this.joins++;
    } else {
      if (clock + RESTART_REGRESSION < c.reported) {
        // far backwards: the same id restarted; it goes on from where it was
        c.offset = c.clock - clock;
        c.reported = clock;
        this.joins++;
      } else {
        c.reported = Math.max(c.reported, clock);
      }
      c.clock = Math.max(c.clock, clock + c.offset);
      c.seen = now;
    }
    if (this.waiters.size > 0) this.wake();
    return c.clock;
  }

  /** The slowest live worker's clock (Infinity when none). */
  slowest(): number {
    const now = this.now();
    let min = Infinity;
    for (const [w, c] of this.clocks) {
      if (now - c.seen > this.liveMs) {
        this.clocks.delete(w);
        continue;
      }
      if (c.clock < min) min = c.clock;
    }
    return min;
  }

  private mayGo(clock: number, bound: number): boolean {
    return clock - this.slowest() <= bound;
  }

  private wake(): void {
    for (const w of this.waiters) {
      if (this.mayGo(w.clock, w.bound)) {
        clearTimeout(w.timer);
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  /** Resolves when a worker at `clock` may read under `bound`; undefined when it may already. */
  admit(worker: string, reported: number, bound: number): Promise<void> | undefined {
    const clock = this.observe(worker, reported);
    if (this.mayGo(clock, bound)) return undefined;
    if (this.waiters.size >= this.maxWaiters) {
      throw new FreshetError('OVERLOADED', `${this.waiters.size} pulls already waiting for slower workers`);
    }
    this.waits++;
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        worker,
        clock,
        bound,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          this.timeouts++;
          reject(
            new FreshetError(
              'TIMEOUT',
              `worker ${worker} at clock ${clock} waited ${this.timeoutMs} ms for slower workers (bound ${bound})`,
            ),
          );
        }, this.timeoutMs),
      };
      this.waiters.add(w);
      // A slow worker may just have expired: re-check on a timer tick as well.
      setTimeout(() => this.wake(), Math.min(this.liveMs, this.timeoutMs) + 1).unref();
    });
  }

  /** Fails every waiting pull (shutdown). */
  close(): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new FreshetError('SHUTTING_DOWN', 'shard stopping'));
    }
    this.waiters.clear();
  }

  get waiting(): number {
    return this.waiters.size;
  }
}

/** The last `size` samples of a duration, for p50/p99/mean in status (no allocation per sample). */
export class RecentTimings {
  private readonly buf: Float64Array;
  private n = 0;
  constructor(size = 1024) {
    this.buf = new Float64Array(size);
  }
  record(ms: number): void {
    this.buf[this.n++ % this.buf.length] = ms;
  }
  summary(): { p50: number; p99: number; mean: number; n: number } {
    const k = Math.min(this.n, this.buf.length);
    if (k === 0) return { p50: 0, p99: 0, mean: 0, n: 0 };
    const xs = this.buf.slice(0, k).sort();
    let sum = 0;
    for (const x of xs) sum += x;
    const r = (x: number) => +x.toFixed(3);
    return {
      p50: r(xs[Math.floor(0.5 * (k - 1))]!),
      p99: r(xs[Math.floor(0.99 * (k - 1))]!),
      mean: r(sum / k),
      n: this.n,
    };
  }
}
