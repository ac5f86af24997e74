import {
  tokenizeText,
  type DeadLetterReason,
  type FeedbackEvent,
  type Features,
  type ImpressionEvent,
} from '@freshet/protocol';
import { compileJoinerOptions, type JoinerOptions, type JoinerOptionsInput } from './joiner-options.js';

/**
 * The impression–feedback joiner: a pure, bounded state machine (no I/O, no timers) fed events and
 * event time, emitting labelled examples. One joiner serves one feedback partition, whose events
 * arrive in per-user order.
 *
 * Impressions wait in `pending` for their attribution window. The first positive signal (click,
 * conversion, long dwell) of the same request+item emits a positive at once (freshness); a window
 * that closes without one emits a negative. Resolved impressions are remembered for
 * `lateWindowMs` so that a click arriving after its negative was emitted is re-inserted as a
 * positive (Ktena et al., RecSys'19), and so that a second click is not counted twice.
 */

/** A labelled example; structurally an `Example` of @freshet/model plus provenance. */
export interface JoinedExample {
  features: Features;
  label: number;
  weight: number;
  /** Event time at which the label became known (click time, window end), ms. */
  ts: number;
  /** The event that produced this example (the click for positives, the impression for negatives). */
  eventId: string;
  source: ExampleSource;
  user: string;
  item?: string;
  request?: string;
  impressionId?: string;
  impressionTs?: number;
  position?: number;
  propensity?: number;
  /** The model that served the impression (its `meta.servedBy`), for served CTR per model. */
  servedBy?: string;
  /** True for a positive re-inserted after its impression was emitted as a negative. */
  delayed?: boolean;
}

export type ExampleSource =
  | 'click'
  | 'conversion'
  | 'dwell'
  | 'negative'
  | 'skip'
  | 'overflow-negative'
  | 'late-positive'
  | 'rating'
  | 'example';

/** What the joiner did with an event it did not turn into (or fold into) an example. */
export type JoinerDropReason =
  | Extract<DeadLetterReason, 'DUPLICATE' | 'RATE_LIMITED'>
  | 'TS_SKEW' // a click stamped more than maxSkewMs before its impression
  | 'TOO_LATE' // a click after lateWindowMs, or for an impression forgotten under pressure
  | 'REDUNDANT' // a further positive for an impression already labelled positive
  | 'NO_SIGNAL'; // short dwell, or a skip/dwell with no impression to attach to

/** Counters, all monotonic; exported as metrics by the worker. */
export interface JoinerCounters {
  events: number;
  examples: number;
  positives: number;
  negatives: number;
  latePositives: number;
  dropped: Record<JoinerDropReason, number>;
  pendingOverflow: number;
  resolvedEvicted: number;
  orphansEvicted: number;
  orphansExpired: number;
  duplicateImpressions: number;
  seenEvicted: number;
  usersEvicted: number;
}

interface Pending {
  id: string;
  user: string;
  request: string;
  item: string;
  ts: number;
  deadline: number;
  features: Features;
  position?: number;
  propensity?: number;
  servedBy?: string;
  /** Monotonic insertion number: heap entries of replaced impressions are recognised as stale. */
  n: number;
}
interface Resolved {
  label: 0 | 1;
  expires: number;
  /** Kept for negatives only, to re-insert a late positive with the impression's features. */
  imp?: Pending;
}
interface Orphan {
  id: string;
  user: string;
  ts: number;
  expires: number;
  source: 'click' | 'conversion' | 'dwell';
}
interface Bucket {
  tokens: number;
  t: number;
}

/** Joiner state as plain data (JSON- or msgpack-safe): store it in KV with the stream sequence. */
export interface JoinerSnapshot {
  v: 1;
  clock: number;
  n: number;
  pending: Pending[];
  resolved: [string, Resolved][];
  orphans: [string, Orphan][];
  seen: [string, number][];
  buckets: [string, Bucket][];
  counters: JoinerCounters;
}

const keyOf = (request: string, item: string) => `${request}\u0000${item}`;

function freshCounters(): JoinerCounters {
  return {
    events: 0,
    examples: 0,
    positives: 0,
    negatives: 0,
    latePositives: 0,
    dropped: { DUPLICATE: 0, RATE_LIMITED: 0, TS_SKEW: 0, TOO_LATE: 0, REDUNDANT: 0, NO_SIGNAL: 0 },
    pendingOverflow: 0,
    resolvedEvicted: 0,
    orphansEvicted: 0,
    orphansExpired: 0,
    duplicateImpressions: 0,
    seenEvicted: 0,
    usersEvicted: 0,
  };
}

/** A binary min-heap of (deadline, n, key); entries whose impression is gone are skipped lazily. */
class DeadlineHeap {
  private d: number[] = [];
  private n: number[] = [];
  private k: string[] = [];
  get size(): number {
    return this.d.length;
  }
  push(deadline: number, n: number, key: string): void {
    this.d.push(deadline);
    this.n.push(n);
    this.k.push(key);
    let i = this.d.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  peek(): { deadline: number; n: number; key: string } | undefined {
    return this.d.length === 0 ? undefined : { deadline: this.d[0]!, n: this.n[0]!, key: this.k[0]! };
  }
  pop(): void {
    const last = this.d.length - 1;
    this.swap(0, last);
    this.d.pop();
    this.n.pop();
    this.k.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < this.d.length && this.less(l, m)) m = l;
      if (r < this.d.length && this.less(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
  }
  clear(): void {
    this.d = [];
    this.n = [];
    this.k = [];
  }
  // Ties break on insertion number, so expiry order is deterministic.
  private less(a: number, b: number): boolean {
    return this.d[a]! < this.d[b]! || (this.d[a] === this.d[b] && this.n[a]! < this.n[b]!);
  }
  private swap(a: number, b: number): void {
    [this.d[a], this.d[b]] = [this.d[b]!, this.d[a]!];
    [this.n[a], this.n[b]] = [this.n[b]!, this.n[a]!];
    [this.k[a], this.k[b]] = [this.k[b]!, this.k[a]!];
  }
}

/**
 * Fake-negative weighting (Ktena et al. 2019, FNW): the importance weight of an example in a
 * stream where every positive was first seen as a negative, given the model's current estimate
 * `p` of P(click | x) (stop-gradient). A trainer that has `p` at hand can multiply it into the
 * example weight; the joiner itself uses positive re-insertion, which needs no model.
 */
export function fakeNegativeWeight(label: number, p: number): number {
  const q = Math.min(Math.max(p, 0), 1);
  return label >= 0.5 ? 1 + q : (1 - q) * (1 + q);
}

/** Callbacks of a {@link Joiner}; a worker uses them to know when it may ack a held event. */
export interface JoinerHooks {
  /**
   * A retained event (see {@link Joiner.retains}) left the joiner's state without becoming part of
   * an example: an orphan positive that expired, was evicted or fell outside its impression's
   * window, or a pending impression dropped under `overflow: 'drop'`.
   */
  released?: (eventId: string) => void;
}

/** Joins one partition's events into labelled examples. Not thread-safe; one per partition. */
export class Joiner {
  readonly options: JoinerOptions;
  private clock = 0;
  private n = 0;
  private pending = new Map<string, Pending>();
  private heap = new DeadlineHeap();
  private resolved = new Map<string, Resolved>();
  private orphans = new Map<string, Orphan>();
  private seen = new Map<string, number>();
  private buckets = new Map<string, Bucket>();
  private c = freshCounters();
  private nextSweep = 0;
  private readonly tokensPerMs: number;
  /** How long a resolved impression is remembered: for re-insertion, and to name too-late clicks. */
  private readonly rememberMs: number;

  private readonly hooks: JoinerHooks;

  constructor(options: JoinerOptionsInput | JoinerOptions = {}, hooks: JoinerHooks = {}) {
    this.options = compileJoinerOptions(options);
    this.hooks = hooks;
    this.tokensPerMs = this.options.rateLimit.positivesPerMinute / 60_000;
    this.rememberMs = Math.max(this.options.lateWindowMs, 2 * this.options.windowMs);
  }

  /** Event time the joiner has reached (max event ts or advance() argument). */
  get now(): number {
    return this.clock;
  }
  get pendingCount(): number {
    return this.pending.size;
  }
  get resolvedCount(): number {
    return this.resolved.size;
  }
  get orphanCount(): number {
    return this.orphans.size;
  }
  /**
   * Whether the joiner now holds `event` in its state, waiting for a partner: a pending impression
   * or an orphan positive. Such an event is later either named by an example (`eventId` or
   * `impressionId`) or reported through `hooks.released`; until then its message must stay unacked.
   */
  retains(event: FeedbackEvent): boolean {
    switch (event.kind) {
      case 'impression':
        return this.pending.get(keyOf(event.request, event.item))?.id === event.id;
      case 'click':
      case 'conversion':
      case 'dwell':
        return this.orphans.get(keyOf(event.request, event.item))?.id === event.id;
      default:
        return false;
    }
  }

  /** A copy of the counters. */
  counters(): JoinerCounters {
    return { ...this.c, dropped: { ...this.c.dropped } };
  }

  /**
   * Feeds one validated event; returns the examples it produced (possibly none), including
   * negatives whose windows the event's time closed. `onDrop` hears about events that were not used.
   */
  push(
    event: FeedbackEvent,
    onDrop?: (reason: JoinerDropReason, event: FeedbackEvent) => void,
  ): JoinedExample[] {
    const out: JoinedExample[] = [];
    this.c.events++;
    this.advanceInto(Math.min(event.ts, Date.now() + this.options.maxClockLeadMs), out);
    const drop = (reason: JoinerDropReason) => {
      this.c.dropped[reason]++;
      onDrop?.(reason, event);
      return out;
    };
    if (this.seen.has(event.id)) return drop('DUPLICATE');
    this.seen.set(event.id, event.ts);
    if (this.seen.size > this.options.dedupe.maxIds) this.trimSeen();

    switch (event.kind) {
      case 'impression':
        this.impression(event, out);
        break;
      case 'click':
        return this.positive(event.user, event.request, event.item, event.id, event.ts, 'click', out, drop);
      case 'conversion':
        if (!this.options.labels.conversionPositive) return drop('NO_SIGNAL');
        return this.positive(
          event.user,
          event.request,
          event.item,
          event.id,
          event.ts,
          'conversion',
          out,
          drop,
        );
      case 'dwell':
        if (event.ms < this.options.labels.dwellPositiveMs) return drop('NO_SIGNAL');
        return this.positive(event.user, event.request, event.item, event.id, event.ts, 'dwell', out, drop);
      case 'skip': {
        const key = keyOf(event.request, event.item);
        const p = this.pending.get(key);
        if (!p || !this.options.labels.skipIsNegative) return drop('NO_SIGNAL');
        this.resolveNegative(p, event.ts, 'skip', event.id, out);
        break;
      }
      case 'rating': {
        const l = this.options.labels;
        const label =
          l.ratingMode === 'binary'
            ? event.rating >= l.ratingThreshold
              ? 1
              : 0
            : Math.min(1, Math.max(0, event.rating / l.ratingMax));
        const ex: JoinedExample = {
          features: this.withIds(event.features, event.user, event.item),
          label,
          weight: label >= 0.5 ? this.options.weights.positive : this.options.weights.negative,
          ts: event.ts,
          eventId: event.id,
          source: 'rating',
          user: event.user,
          item: event.item,
        };
        if (event.request !== undefined) ex.request = event.request;
        this.emit(ex, out);
        break;
      }
      case 'example': {
        const ex: JoinedExample = {
          // the event's user (and item) are features even when the labeller did not repeat them
          features: this.exampleIds(event.features, event.user, event.item),
          label: event.label,
          weight: event.weight,
          ts: event.ts,
          eventId: event.id,
          source: 'example',
          user: event.user,
        };
        if (event.item !== undefined) ex.item = event.item;
        this.emit(ex, out);
        break;
      }
    }
    return out;
  }

  /**
   * Moves event time forward (never back) and emits the negatives whose windows closed. A worker
   * calls it with wall time only when its consumer is caught up, so a backlog replayed after a
   * restart is judged by event time, not by how late it was read.
   */
  advance(t: number): JoinedExample[] {
    const out: JoinedExample[] = [];
    this.advanceInto(t, out);
    return out;
  }

  /** Emits every pending impression as a negative now (final drain of a partition). */
  flush(): JoinedExample[] {
    const out: JoinedExample[] = [];
    for (;;) {
      const top = this.heap.peek();
      if (!top) break;
      this.heap.pop();
      const p = this.pending.get(top.key);
      if (p && p.n === top.n) this.resolveNegative(p, Math.max(this.clock, p.ts), 'negative', p.id, out);
    }
    return out;
  }

  /** Plain-data state; with the stream sequence it covers, enough to resume without double counting. */
  snapshot(): JoinerSnapshot {
    return structuredClone({
      v: 1 as const,
      clock: this.clock,
      n: this.n,
      pending: [...this.pending.values()],
      resolved: [...this.resolved.entries()],
      orphans: [...this.orphans.entries()],
      seen: [...this.seen.entries()],
      buckets: [...this.buckets.entries()],
      counters: this.c,
    });
  }

  /** Replaces this joiner's state with a snapshot's (insertion orders, hence eviction orders, kept). */
  restore(s: JoinerSnapshot): void {
    const c = structuredClone(s);
    this.clock = c.clock;
    this.n = c.n;
    this.pending = new Map(c.pending.map((p) => [keyOf(p.request, p.item), p]));
    this.heap.clear();
    for (const [k, p] of this.pending) this.heap.push(p.deadline, p.n, k);
    this.resolved = new Map(c.resolved);
    this.orphans = new Map(c.orphans);
    this.seen = new Map(c.seen);
    this.buckets = new Map(c.buckets);
    this.nextSweep = 0;
    this.c = {
      ...freshCounters(),
      ...c.counters,
      dropped: { ...freshCounters().dropped, ...c.counters.dropped },
    };
  }

  /**
   * Drops everything held for one user (`freshet user forget`): pending impressions, orphan
   * positives, remembered negatives (their features) and the rate-limit bucket. Held events are
   * reported through `hooks.released`, so their messages get acked. Returns what was dropped.
   */
  forgetUser(user: string): { pending: number; orphans: number; resolved: number } {
    const out = { pending: 0, orphans: 0, resolved: 0 };
    for (const [k, p] of this.pending) {
      if (p.user !== user) continue;
      this.pending.delete(k); // its heap entry is skipped as stale
      this.hooks.released?.(p.id);
      out.pending++;
    }
    for (const [k, o] of this.orphans) {
      if (o.user !== user) continue;
      this.orphans.delete(k);
      this.hooks.released?.(o.id);
      out.orphans++;
    }
    for (const [k, r] of this.resolved) {
      if (r.imp?.user !== user) continue;
      this.resolved.delete(k);
      out.resolved++;
    }
    this.buckets.delete(user);
    return out;
  }

  // ------------------------------------------------------------------ internals

  private impression(e: ImpressionEvent, out: JoinedExample[]): void {
    const key = keyOf(e.request, e.item);
    if (this.pending.has(key) || this.resolved.has(key)) {
      this.c.duplicateImpressions++;
      return;
    }
    if (this.pending.size >= this.options.maxPending) this.evictOldestPending(out);
    const p: Pending = {
      id: e.id,
      user: e.user,
      request: e.request,
      item: e.item,
      ts: e.ts,
      deadline: e.ts + this.options.windowMs,
      features: this.impressionFeatures(e),
      n: ++this.n,
    };
    if (e.position !== undefined) p.position = e.position;
    if (e.propensity !== undefined) p.propensity = e.propensity;
    if (typeof e.meta?.servedBy === 'string') p.servedBy = e.meta.servedBy;
    const orphan = this.orphans.get(key);
    if (orphan) {
      this.orphans.delete(key);
      if (orphan.ts >= p.ts - this.options.maxSkewMs && orphan.ts <= p.deadline) {
        this.resolvePositive(p, orphan.ts, orphan.source, orphan.id, out);
        return;
      }
      this.hooks.released?.(orphan.id);
    }
    this.pending.set(key, p);
    this.heap.push(p.deadline, p.n, key);
    this.compactHeap();
    // An impression read after its own window (a lagging publisher) is labelled now.
    this.expire(out);
  }

  private positive(
    user: string,
    request: string,
    item: string,
    id: string,
    ts: number,
    source: 'click' | 'conversion' | 'dwell',
    out: JoinedExample[],
    drop: (r: JoinerDropReason) => JoinedExample[],
  ): JoinedExample[] {
    if (!this.allow(user, ts)) return drop('RATE_LIMITED');
    const key = keyOf(request, item);
    const p = this.pending.get(key);
    if (p) {
      if (ts < p.ts - this.options.maxSkewMs) return drop('TS_SKEW');
      this.pending.delete(key);
      this.resolvePositive(p, ts, source, id, out);
      return out;
    }
    const r = this.resolved.get(key);
    if (r) {
      if (r.label === 1) return drop('REDUNDANT');
      const imp = r.imp;
      if (!imp || ts > imp.ts + this.options.lateWindowMs || this.options.lateWindowMs === 0) {
        return drop('TOO_LATE');
      }
      if (ts < imp.ts - this.options.maxSkewMs) return drop('TS_SKEW');
      // Positive re-insertion: the negative already trained stays; this positive joins it.
      this.resolved.set(key, { label: 1, expires: r.expires });
      this.c.latePositives++;
      this.emit(
        {
          ...this.base(imp),
          label: 1,
          weight: this.options.weights.latePositive,
          ts,
          eventId: id,
          source: 'late-positive',
          delayed: true,
        },
        out,
      );
      return out;
    }
    if (this.orphans.has(key)) return drop('REDUNDANT');
    if (this.orphans.size >= this.options.maxOrphans) {
      const first = this.orphans.entries().next();
      if (!first.done) {
        this.orphans.delete(first.value[0]);
        this.hooks.released?.(first.value[1].id);
      }
      this.c.orphansEvicted++;
    }
    this.orphans.set(key, { id, user, ts, expires: ts + this.options.orphanWaitMs, source });
    return out;
  }

  private resolvePositive(
    p: Pending,
    ts: number,
    source: 'click' | 'conversion' | 'dwell',
    id: string,
    out: JoinedExample[],
  ): void {
    const w = this.options.weights;
    this.remember(keyOf(p.request, p.item), { label: 1, expires: p.ts + this.rememberMs });
    this.emit(
      {
        ...this.base(p),
        label: 1,
        weight: source === 'conversion' ? w.conversion : w.positive,
        ts,
        eventId: id,
        source,
      },
      out,
    );
  }

  private resolveNegative(
    p: Pending,
    ts: number,
    source: 'negative' | 'skip' | 'overflow-negative',
    id: string,
    out: JoinedExample[],
  ): void {
    const key = keyOf(p.request, p.item);
    this.pending.delete(key);
    const r: Resolved = { label: 0, expires: p.ts + this.rememberMs };
    if (this.options.lateWindowMs > 0) r.imp = p;
    this.remember(key, r);
    this.emit(
      { ...this.base(p), label: 0, weight: this.options.weights.negative, ts, eventId: id, source },
      out,
    );
  }

  private base(p: Pending): Omit<JoinedExample, 'label' | 'weight' | 'ts' | 'eventId' | 'source'> {
    const b: Omit<JoinedExample, 'label' | 'weight' | 'ts' | 'eventId' | 'source'> = {
      features: p.features,
      user: p.user,
      item: p.item,
      request: p.request,
      impressionId: p.id,
      impressionTs: p.ts,
    };
    if (p.position !== undefined) b.position = p.position;
    if (p.propensity !== undefined) b.propensity = p.propensity;
    if (p.servedBy !== undefined) b.servedBy = p.servedBy;
    return b;
  }

  private emit(ex: JoinedExample, out: JoinedExample[]): void {
    this.c.examples++;
    if (ex.label >= 0.5) this.c.positives++;
    else this.c.negatives++;
    out.push(ex);
  }

  private remember(key: string, r: Resolved): void {
    this.resolved.delete(key);
    this.resolved.set(key, r);
    while (this.resolved.size > this.options.maxResolved) {
      const first = this.resolved.keys().next();
      if (first.done) break;
      this.resolved.delete(first.value);
      this.c.resolvedEvicted++;
    }
  }

  private evictOldestPending(out: JoinedExample[]): void {
    for (;;) {
      const top = this.heap.peek();
      if (!top) return;
      this.heap.pop();
      const p = this.pending.get(top.key);
      if (!p || p.n !== top.n) continue;
      this.c.pendingOverflow++;
      if (this.options.overflow === 'emit-negative') {
        this.resolveNegative(p, Math.max(this.clock, p.ts), 'overflow-negative', p.id, out);
      } else {
        this.pending.delete(top.key);
        this.hooks.released?.(p.id);
      }
      return;
    }
  }

  private advanceInto(t: number, out: JoinedExample[]): void {
    if (t <= this.clock) return;
    this.clock = t;
    this.expire(out);
  }

  private expire(out: JoinedExample[]): void {
    const now = this.clock;
    for (;;) {
      const top = this.heap.peek();
      if (!top || top.deadline > now) break;
      this.heap.pop();
      const p = this.pending.get(top.key);
      if (p && p.n === top.n) this.resolveNegative(p, p.deadline, 'negative', p.id, out);
    }
    // The maps below are swept at most once per 100 ms of event time: their expiry need not be
    // exact, and sweeping on every event was a measurable share of the joiner's time.
    if (now < this.nextSweep) return;
    this.nextSweep = now + 100;
    // Maps are in insertion order, which is close to time order: expiring from the front is
    // cheap and exact enough (an entry expires at most one out-of-order span late).
    for (;;) {
      const first = this.orphans.entries().next();
      if (first.done || first.value[1].expires > now) break;
      this.orphans.delete(first.value[0]);
      this.c.orphansExpired++;
      this.hooks.released?.(first.value[1].id);
    }
    for (;;) {
      const first = this.resolved.entries().next();
      if (first.done || first.value[1].expires > now) break;
      this.resolved.delete(first.value[0]);
    }
    this.trimSeen();
  }

  private trimSeen(): void {
    const { maxIds, windowMs } = this.options.dedupe;
    const horizon = this.clock - windowMs;
    while (this.seen.size > 0) {
      const first = this.seen.entries().next();
      if (first.done || (this.seen.size <= maxIds && first.value[1] >= horizon)) break;
      this.seen.delete(first.value[0]);
      if (this.seen.size >= maxIds) this.c.seenEvicted++;
    }
  }

  /** Token bucket per user in event time; least recently active users are forgotten first. */
  private allow(user: string, ts: number): boolean {
    const rl = this.options.rateLimit;
    if (!rl.enabled) return true;
    let b = this.buckets.get(user);
    if (b) {
      this.buckets.delete(user);
      b.tokens = Math.min(rl.burst, b.tokens + Math.max(0, ts - b.t) * this.tokensPerMs);
      b.t = Math.max(b.t, ts);
    } else {
      b = { tokens: rl.burst, t: ts };
      if (this.buckets.size >= rl.maxUsers) {
        const first = this.buckets.keys().next();
        if (!first.done) this.buckets.delete(first.value);
        this.c.usersEvicted++;
      }
    }
    this.buckets.set(user, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  private exampleIds(features: Features, user: string, item: string | undefined): Features {
    if (!this.options.features.ids) return features;
    const out: Features = { ...features };
    out.user ??= user;
    if (item !== undefined) out.item ??= item;
    return out;
  }

  private withIds(features: Features, user: string, item: string): Features {
    return this.options.features.ids ? { ...features, user, item } : features;
  }

  private impressionFeatures(e: ImpressionEvent): Features {
    const f = this.options.features;
    const out: Features = { ...e.features };
    if (f.ids) {
      out.user = e.user;
      out.item = e.item;
    }
    if (f.position && e.position !== undefined) out.position = e.position;
    if (f.queryTokens && e.query !== undefined) {
      const tokens = tokenizeText(e.query, f.maxQueryTokens); // serving tokenizes queries the same way
      if (tokens.length > 0) out.query = tokens;
    }
    return out;
  }

  /** Drops heap entries of impressions already resolved, so the heap stays O(maxPending). */
  private compactHeap(): void {
    if (this.heap.size <= 2 * this.pending.size + 1024) return;
    this.heap.clear();
    for (const [k, p] of this.pending) this.heap.push(p.deadline, p.n, k);
  }
}
