import { describe, expect, it } from 'vitest';
import { feedbackEventSchema, type FeedbackEvent, type FeedbackEventInput } from '@freshet/protocol';
import { Joiner } from '../src/joiner.js';

const T0 = 1_700_000_000_000;
const W = 60_000;
let n = 0;
const ev = (user: string, e: Record<string, unknown>): FeedbackEvent =>
  feedbackEventSchema.parse({ id: `f${++n}`, user, ...e } as FeedbackEventInput);

// `freshet user forget` on a joiner: everything held for the user goes (each held event is
// released, so its message gets acked), and nothing of the other users does.
describe('Joiner.forgetUser', () => {
  it("drops the user's pending impressions, orphans and remembered negatives only", () => {
    const released: string[] = [];
    const j = new Joiner(
      { windowMs: W, lateWindowMs: 10 * W, orphanWaitMs: 30_000, maxSkewMs: 5_000 },
      { released: (id) => released.push(id) },
    );
    const a1 = ev('alice', { kind: 'impression', request: 'ra', item: 'i1', ts: T0 });
    const a2 = ev('alice', { kind: 'click', request: 'rb', item: 'i2', ts: T0 + 10 }); // orphan
    const b1 = ev('bob', { kind: 'impression', request: 'rc', item: 'i1', ts: T0 + 20 });
    const b2 = ev('bob', { kind: 'click', request: 'rd', item: 'i3', ts: T0 + 30 }); // orphan
    const a0 = ev('alice', { kind: 'impression', request: 'r0', item: 'i0', ts: T0 - 2 * W });
    for (const e of [a0, a1, a2, b1, b2]) j.push(e);
    // a0's window closed at a1's time: it is a remembered negative (with alice's features)
    expect(j.resolvedCount).toBe(1);
    expect([j.pendingCount, j.orphanCount]).toEqual([2, 2]);

    expect(j.forgetUser('alice')).toEqual({ pending: 1, orphans: 1, resolved: 1 });
    expect(released.sort()).toEqual([a1.id, a2.id].sort());
    expect([j.pendingCount, j.orphanCount, j.resolvedCount]).toEqual([1, 1, 0]);
    expect(j.retains(b1) && j.retains(b2)).toBe(true);
    // a late click of alice's on the forgotten negative finds nothing to re-insert
    expect(j.push(ev('alice', { kind: 'click', request: 'r0', item: 'i0', ts: T0 + 40 }))).toEqual([]);
    // bob's impression still joins
    expect(j.push(ev('bob', { kind: 'click', request: 'rc', item: 'i1', ts: T0 + 50 }))).toHaveLength(1);
    expect(j.forgetUser('nobody')).toEqual({ pending: 0, orphans: 0, resolved: 0 });
  });
});
