import { describe, expect, it } from 'vitest';
import type { FeedbackEvent, FeedbackEventInput } from '@freshet/protocol';
import { compileParseOptions, feedbackEventSchema } from '@freshet/protocol';
import { Joiner, type JoinedExample } from '../src/joiner.js';
import { Joining } from '../src/joining.js';
import type { MessageHolds } from '../src/message-holds.js';
import type { Buffered, PartitionState, WorkerCounters } from '../src/worker-types.js';

// Logged propensities (Open Bandit's propensity_score) must reach the labelled example whatever
// path labels the impression, so off-policy evaluation can weight it.

const T0 = 1_700_000_000_000;
const W = 60_000;
let n = 0;
const ev = (e: Record<string, unknown>): FeedbackEvent =>
  feedbackEventSchema.parse({ id: `p${++n}`, user: 'u1', ...e } as FeedbackEventInput);
const imp = (request: string, item: string, ts: number, propensity?: number) =>
  ev({ kind: 'impression', request, item, ts, ...(propensity === undefined ? {} : { propensity }) });
const click = (request: string, item: string, ts: number) => ev({ kind: 'click', request, item, ts });
const opts = { windowMs: W, lateWindowMs: 10 * W, orphanWaitMs: 30_000, maxSkewMs: 5_000 };

describe('Joiner propensities', () => {
  it('carries the impression propensity onto positives, negatives and late positives', () => {
    const j = new Joiner(opts);
    const pos = [...j.push(imp('r1', 'a', T0, 0.25)), ...j.push(click('r1', 'a', T0 + 10))];
    expect(pos).toHaveLength(1);
    expect(pos[0]).toMatchObject({ label: 1, source: 'click', propensity: 0.25 });

    j.push(imp('r2', 'b', T0 + 20, 0.5));
    const neg = j.advance(T0 + 20 + W);
    expect(neg.map((e) => [e.item, e.label, e.propensity])).toEqual([['b', 0, 0.5]]);
    const late = j.push(click('r2', 'b', T0 + 2 * W));
    expect(late.map((e) => [e.source, e.label, e.propensity])).toEqual([['late-positive', 1, 0.5]]);
  });

  it('carries it when the click came first (orphan) and through a snapshot; none when not logged', () => {
    const j = new Joiner(opts);
    expect(j.push(click('r3', 'c', T0 + 5))).toEqual([]);
    const out = j.push(imp('r3', 'c', T0, 0.125));
    expect(out.map((e) => [e.label, e.propensity])).toEqual([[1, 0.125]]);

    j.push(imp('r4', 'd', T0 + 100, 0.75));
    j.push(imp('r5', 'e', T0 + 100));
    const k = new Joiner(opts);
    k.restore(structuredClone(j.snapshot()));
    const neg = k.advance(T0 + 100 + W);
    expect(neg.map((e) => [e.item, e.propensity])).toEqual([
      ['d', 0.75],
      ['e', undefined],
    ]);
    expect('propensity' in neg[1]!).toBe(false);
  });
});

describe('Joining', () => {
  it('puts the propensity on the example it buffers for training, and only when logged', () => {
    const buffered: Omit<Buffered, 'at'>[] = [];
    const joining = new Joining({
      holds: {} as MessageHolds, // not reached: no joined example below holds a message
      counters: {} as WorkerCounters,
      parseOpts: compileParseOptions({}),
      isLabels: () => false,
      enqueue: (b) => buffered.push(b),
    });
    const ps = { partition: 3, retained: new Map() } as unknown as PartitionState;
    const j = new Joiner(opts);
    const out: JoinedExample[] = [
      ...j.push(imp('r6', 'f', T0, 0.2)),
      ...j.push(click('r6', 'f', T0 + 1)),
      ...j.push(imp('r7', 'g', T0 + 2)),
      ...j.advance(T0 + 2 + W),
    ];
    joining.emitJoined(ps, out);
    expect(buffered.map((b) => [b.example.label, b.example.propensity])).toEqual([
      [1, 0.2],
      [0, undefined],
    ]);
    expect('propensity' in buffered[1]!.example).toBe(false);
    expect(buffered[0]!.example).toMatchObject({ features: { item: 'f' }, weight: 1, ts: T0 + 1 });
  });
});
