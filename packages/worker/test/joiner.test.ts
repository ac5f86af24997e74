import { describe, expect, it } from 'vitest';
import type { FeedbackEvent, FeedbackEventInput } from '@freshet/protocol';
import { feedbackEventSchema } from '@freshet/protocol';
import { fakeNegativeWeight, Joiner, type JoinedExample, type JoinerSnapshot } from '../src/joiner.js';
import type { JoinerOptionsInput } from '../src/joiner-options.js';

const T0 = 1_700_000_000_000;
const W = 60_000;
let n = 0;
const ev = (e: Record<string, unknown>): FeedbackEvent =>
  feedbackEventSchema.parse({ id: `e${++n}`, user: 'u1', ...e } as FeedbackEventInput);
const imp = (request: string, item: string, ts: number, extra: Record<string, unknown> = {}) =>
  ev({ kind: 'impression', request, item, ts, ...extra });
const click = (request: string, item: string, ts: number, extra: Record<string, unknown> = {}) =>
  ev({ kind: 'click', request, item, ts, ...extra });
const opts: JoinerOptionsInput = {
  windowMs: W,
  lateWindowMs: 10 * W,
  orphanWaitMs: 30_000,
  maxSkewMs: 5_000,
};

function run(j: Joiner, events: FeedbackEvent[]): JoinedExample[] {
  return events.flatMap((e) => j.push(e));
}

describe('Joiner', () => {
  it('emits a positive at the click, with impression features, ids, position and query tokens', () => {
    const j = new Joiner(opts);
    const out = run(j, [
      imp('r1', 'i1', T0, { position: 2, query: 'Red  Shoes!', features: { device: 'ios' } }),
      click('r1', 'i1', T0 + 1000),
    ]);
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({
      label: 1,
      weight: 1,
      ts: T0 + 1000,
      source: 'click',
      impressionTs: T0,
      position: 2,
      features: { device: 'ios', user: 'u1', item: 'i1', position: 2, query: ['red', 'shoes'] },
    });
    expect(j.pendingCount).toBe(0);
    expect(j.advance(T0 + 2 * W)).toEqual([]); // no negative for a clicked impression
  });

  it('emits a negative when the window closes without a positive, by event time or advance()', () => {
    const j = new Joiner(opts);
    expect(run(j, [imp('r1', 'i1', T0), imp('r1', 'i2', T0 + 10)])).toEqual([]);
    expect(j.advance(T0 + W - 1)).toEqual([]);
    const neg = j.advance(T0 + W);
    expect(neg.map((e) => [e.item, e.label, e.source, e.ts])).toEqual([['i1', 0, 'negative', T0 + W]]);
    // A later event's time closes the other window too.
    const out = j.push(imp('r2', 'i9', T0 + W + 20));
    expect(out.map((e) => [e.item, e.label])).toEqual([['i2', 0]]);
  });

  it('re-inserts a click that arrives after its negative was emitted (positive re-insertion), once', () => {
    const j = new Joiner(opts);
    run(j, [imp('r1', 'i1', T0)]);
    expect(j.advance(T0 + W)[0]?.label).toBe(0);
    const late = j.push(click('r1', 'i1', T0 + 2 * W));
    expect(late).toHaveLength(1);
    expect(late[0]).toMatchObject({
      label: 1,
      source: 'late-positive',
      delayed: true,
      features: { item: 'i1' },
    });
    expect(j.push(click('r1', 'i1', T0 + 2 * W + 5))).toEqual([]);
    expect(j.counters().dropped.REDUNDANT).toBe(1);
    expect(j.counters().latePositives).toBe(1);
  });

  it('does not re-insert a click past lateWindowMs: it waits as an orphan and expires', () => {
    const j = new Joiner(opts);
    run(j, [imp('r1', 'i1', T0)]);
    j.advance(T0 + W);
    expect(j.push(click('r1', 'i1', T0 + 11 * W))).toEqual([]);
    expect(j.advance(T0 + 12 * W)).toEqual([]);
    expect(j.counters().orphansExpired).toBe(1);
    expect(j.counters().latePositives).toBe(0);
  });

  it('drops late clicks as TOO_LATE when re-insertion is off', () => {
    const j = new Joiner({ ...opts, lateWindowMs: 0 });
    run(j, [imp('r1', 'i1', T0), imp('r2', 'i1', T0 + W)]);
    const drops: string[] = [];
    expect(j.push(click('r1', 'i1', T0 + W + 1), (r) => drops.push(r))).toEqual([]);
    expect(drops).toEqual(['TOO_LATE']);
  });

  it('joins a click that arrives before its impression (out of order), and expires lonely ones', () => {
    const j = new Joiner(opts);
    expect(j.push(click('r1', 'i1', T0 + 500))).toEqual([]);
    expect(j.orphanCount).toBe(1);
    const out = j.push(imp('r1', 'i1', T0));
    expect(out.map((e) => [e.label, e.source])).toEqual([[1, 'click']]);
    j.push(click('r7', 'i7', T0 + 1000));
    j.advance(T0 + 40_000);
    expect(j.orphanCount).toBe(0);
    expect(j.counters().orphansExpired).toBe(1);
  });

  it('drops duplicate event ids and ignores a second impression of the same request+item', () => {
    const j = new Joiner(opts);
    const i1 = imp('r1', 'i1', T0);
    const c1 = click('r1', 'i1', T0 + 5);
    expect(run(j, [i1, i1, c1, c1])).toHaveLength(1);
    expect(j.counters().dropped.DUPLICATE).toBe(2);
    run(j, [imp('r1', 'i1', T0 + 6)]);
    expect(j.counters().duplicateImpressions).toBe(1);
    expect(j.advance(T0 + 5 * W)).toEqual([]);
  });

  it('rate-limits click spam per user without hurting other users', () => {
    const j = new Joiner({ ...opts, rateLimit: { positivesPerMinute: 60, burst: 5 } });
    const events: FeedbackEvent[] = [];
    for (let i = 0; i < 50; i++) {
      events.push(
        imp(`r${i}`, 'i', T0 + i, { user: 'spammer' }),
        click(`r${i}`, 'i', T0 + i + 1, { user: 'spammer' }),
      );
    }
    events.push(imp('rx', 'i', T0 + 100, { user: 'honest' }), click('rx', 'i', T0 + 101, { user: 'honest' }));
    const pos = run(j, events).filter((e) => e.label === 1);
    expect(pos.filter((e) => e.user === 'spammer')).toHaveLength(5);
    expect(pos.filter((e) => e.user === 'honest')).toHaveLength(1);
    expect(j.counters().dropped.RATE_LIMITED).toBe(45);
    // The spammer's impressions still become negatives: the clicks were noise, the impressions real.
    expect(j.advance(T0 + 2 * W).filter((e) => e.user === 'spammer')).toHaveLength(45);
  });

  it('drops a click stamped too far before its impression (clock skew)', () => {
    const j = new Joiner(opts);
    j.push(imp('r1', 'i1', T0 + 10_000));
    const drops: string[] = [];
    j.push(click('r1', 'i1', T0 + 10_000 - 6_000), (r) => drops.push(r));
    j.push(click('r1', 'i1', T0 + 10_000 - 4_000));
    expect(drops).toEqual(['TS_SKEW']);
    expect(j.counters().positives).toBe(1);
  });

  it('maps dwell, conversion, skip and ratings to labels by the configured rules', () => {
    const j = new Joiner(opts);
    run(j, [imp('r', 'a', T0), imp('r', 'b', T0), imp('r', 'c', T0), imp('r', 'd', T0)]);
    const out = run(j, [
      ev({ kind: 'dwell', request: 'r', item: 'a', ms: 31_000, ts: T0 + 1 }),
      ev({ kind: 'dwell', request: 'r', item: 'b', ms: 2_000, ts: T0 + 2 }),
      ev({ kind: 'conversion', request: 'r', item: 'c', ts: T0 + 3 }),
      ev({ kind: 'skip', request: 'r', item: 'd', ts: T0 + 4 }),
      ev({ kind: 'rating', item: 'm1', rating: 4, ts: T0 + 5 }),
      ev({ kind: 'rating', item: 'm2', rating: 3.5, ts: T0 + 6 }),
    ]);
    expect(out.map((e) => [e.item, e.label, e.source])).toEqual([
      ['a', 1, 'dwell'],
      ['c', 1, 'conversion'],
      ['d', 0, 'skip'],
      ['m1', 1, 'rating'],
      ['m2', 0, 'rating'],
    ]);
    expect(j.advance(T0 + W).map((e) => [e.item, e.label])).toEqual([['b', 0]]);
    const scaled = new Joiner({ labels: { ratingMode: 'scaled', ratingMax: 5 } });
    expect(scaled.push(ev({ kind: 'rating', item: 'm', rating: 2.5, ts: T0 }))[0]?.label).toBe(0.5);
  });

  it('passes pre-labelled examples through, with their user and item as features', () => {
    const j = new Joiner(opts);
    const out = j.push(ev({ kind: 'example', label: 1, weight: 2, features: { c1: 'x', i1: 3 }, ts: T0 }));
    expect(out).toEqual([
      expect.objectContaining({
        label: 1,
        weight: 2,
        source: 'example',
        features: { c1: 'x', i1: 3, user: 'u1' },
      }),
    ]);
    // an item on the event joins too; features the labeller set win
    const withItem = j.push(
      ev({ kind: 'example', label: 0, item: 'b7', features: { user: 'kept' }, ts: T0 + 1 }),
    );
    expect(withItem[0]!.features).toEqual({ user: 'kept', item: 'b7' });
  });

  it('a publisher with a fast clock cannot close other users’ windows (clock led by wall time)', () => {
    const j = new Joiner(opts);
    const now = Date.now();
    expect(j.push(imp('r1', 'i1', now, { user: 'slow' }))).toEqual([]);
    // 290 s ahead: accepted, but moves the joiner's clock only to wall time + maxClockLeadMs
    j.push(imp('r2', 'i2', now + 290_000, { user: 'fast' }));
    expect(j.now).toBeLessThan(now + 60_000);
    // the slow user's click, within its window, still labels its impression
    const out = j.push(click('r1', 'i1', now + 1000, { user: 'slow' }));
    expect(out).toEqual([expect.objectContaining({ request: 'r1', label: 1, source: 'click' })]);
  });

  it('bounds pending impressions: overflow emits the earliest-deadline ones as negatives, or drops them', () => {
    const j = new Joiner({ ...opts, maxPending: 3 });
    const out = run(
      j,
      [0, 1, 2, 3, 4].map((i) => imp(`r${i}`, 'i', T0 + i)),
    );
    expect(out.map((e) => [e.request, e.source])).toEqual([
      ['r0', 'overflow-negative'],
      ['r1', 'overflow-negative'],
    ]);
    expect(j.pendingCount).toBe(3);
    expect(j.counters().pendingOverflow).toBe(2);
    const d = new Joiner({ ...opts, maxPending: 3, overflow: 'drop' });
    expect(
      run(
        d,
        [0, 1, 2, 3, 4].map((i) => imp(`r${i}`, 'i', T0 + i)),
      ),
    ).toEqual([]);
    expect(d.pendingCount).toBe(3);
    expect(d.advance(T0 + 2 * W).map((e) => e.request)).toEqual(['r2', 'r3', 'r4']);
  });

  it('bounds the dedupe set and the remembered resolutions', () => {
    const j = new Joiner({ ...opts, dedupe: { maxIds: 10 }, maxResolved: 5 });
    for (let i = 0; i < 20; i++) {
      j.push(imp(`r${i}`, 'i', T0 + i));
      j.push(click(`r${i}`, 'i', T0 + i));
    }
    expect(j.counters().seenEvicted).toBe(30);
    expect(j.resolvedCount).toBe(5);
    expect(j.counters().resolvedEvicted).toBe(15);
  });

  it('restores from a snapshot and resumes without double counting redelivered events', () => {
    const events = randomStream(400, 7);
    const whole = new Joiner(opts);
    const expected = [...run(whole, events), ...whole.flush()];

    const cut = 250;
    const a = new Joiner(opts);
    const first = run(a, events.slice(0, cut));
    const snap = JSON.parse(JSON.stringify(a.snapshot())) as JoinerSnapshot;
    const b = new Joiner(opts);
    b.restore(snap);
    // After a crash, JetStream redelivers what was not acked: some events before the cut again.
    const second = [...run(b, events.slice(cut - 40)), ...b.flush()];
    const key = (e: JoinedExample) => `${e.eventId}:${e.label}:${e.source}:${e.ts}`;
    expect([...first, ...second].map(key)).toEqual(expected.map(key));
    expect(b.counters().dropped.DUPLICATE).toBe(40);
  });

  it('is deterministic and conserves impressions on a random stream', () => {
    const events = randomStream(2000, 3);
    const j1 = new Joiner(opts);
    const j2 = new Joiner(opts);
    const o1 = [...run(j1, events), ...j1.flush()];
    const o2 = [...run(j2, events), ...j2.flush()];
    expect(o2).toEqual(o1);
    const impressions = events.filter((e) => e.kind === 'impression').length;
    const onTime = o1.filter((e) => e.source !== 'late-positive');
    expect(onTime).toHaveLength(impressions); // every impression labelled exactly once
    const c = j1.counters();
    expect(c.latePositives).toBeGreaterThan(0);
    expect(c.positives).toBeGreaterThan(0);
    expect(c.negatives).toBeGreaterThan(0);
  });

  it('computes fake-negative weights (Ktena et al. 2019)', () => {
    expect(fakeNegativeWeight(1, 0.25)).toBeCloseTo(1.25);
    expect(fakeNegativeWeight(0, 0.25)).toBeCloseTo(0.75 * 1.25);
  });

  it('rejects bad options with a CONFIG error', () => {
    expect(() => new Joiner({ windowMs: -1 })).toThrow(/windowMs/);
  });
});

/** Impressions with clicks at random delays (some after the window, some before the impression). */
function randomStream(impressions: number, seed: number): FeedbackEvent[] {
  let s = seed;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const evs: FeedbackEvent[] = [];
  for (let i = 0; i < impressions; i++) {
    const t = T0 + i * 500;
    const user = `u${Math.floor(rnd() * 50)}`;
    evs.push(imp(`r${i}`, `i${i % 13}`, t, { user }));
    const r = rnd();
    if (r < 0.3) evs.push(click(`r${i}`, `i${i % 13}`, t + Math.floor(rnd() * W * 0.8), { user }));
    else if (r < 0.4) evs.push(click(`r${i}`, `i${i % 13}`, t + W + Math.floor(rnd() * W * 3), { user }));
  }
  // Sorted by time, with ties in stream order: what a partition delivers.
  return evs
    .map((e, k) => [e, k] as const)
    .sort((a, b) => a[0].ts - b[0].ts || a[1] - b[1])
    .map((x) => x[0]);
}
