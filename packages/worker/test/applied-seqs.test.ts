import { describe, expect, it } from 'vitest';
import { AppliedSeqs } from '../src/applied-seqs.js';

describe('AppliedSeqs', () => {
  it('remembers a sequence while its ack is confirmed, briefly after, and longer when unconfirmed', () => {
    const a = new AppliedSeqs(10, 100);
    a.acking(1);
    a.acking(2);
    a.acking(3);
    expect([1, 2, 3].map((s) => a.has(s))).toEqual([true, true, true]);
    a.prune(1_000_000); // confirming sequences are never pruned
    expect(a.size).toBe(3);
    a.confirmed(1, 0); // a redelivery sent before this ack landed may still arrive
    a.awaitRedelivery(2, 0); // never confirmed: its redelivery is due
    a.prune(9);
    expect(a.has(1)).toBe(true);
    a.prune(10);
    expect(a.has(1)).toBe(false);
    expect(a.has(2)).toBe(true);
    a.prune(100);
    expect(a.has(2)).toBe(false);
    expect(a.has(3)).toBe(true);
  });

  it('prunes from the oldest entry and keeps a re-confirmed sequence for its new term', () => {
    const a = new AppliedSeqs(10, 100);
    for (let s = 1; s <= 5; s++) {
      a.acking(s);
      a.confirmed(s, s);
    }
    a.confirmed(1, 8); // acked again (a redelivery): remembered until 18
    a.prune(12);
    // 2 was due at 12; 3, 4, 5 at 13–15; 1 at 18
    expect([1, 2, 3, 4, 5].filter((s) => a.has(s))).toEqual([1, 3, 4, 5]);
    a.prune(17);
    expect(a.has(1)).toBe(true);
    a.prune(18);
    expect(a.size).toBe(0);
  });
});
