import { describe, expect, it } from 'vitest';
import { measureThreadHandoff } from '../src/thread-probe.js';

// The cost probe's hand-off figures come from a real shard thread and a real nats-server.
describe('thread hand-off probe', () => {
  it('times both ends of a part handed to a shard thread', async () => {
    const r = await measureThreadHandoff({ calls: 2000 });
    // a part costs its sender something, pipelined and alone (which is the cheaper is a timing,
    // the bench's to report: under a loaded test run the order flipped once, 20.8 vs 26.2 µs)
    expect(r.threadPartUs).toBeGreaterThan(0);
    expect(r.threadPartUs).toBeLessThan(100_000);
    expect(r.threadPartSerialUs).toBeGreaterThan(0);
    expect(r.threadPartSerialUs).toBeLessThan(100_000);
    // the receiving side: a busy time less the shard's own, never negative, never absurd
    expect(r.threadPartRecvUs).toBeGreaterThanOrEqual(0);
    expect(r.threadPartRecvUs).toBeLessThan(1000);
    // a part beyond a group's first: an increment of two busy times, never negative
    expect(r.threadGroupPartUs).toBeGreaterThanOrEqual(0);
    expect(r.threadGroupPartUs).toBeLessThan(1000);
  }, 60_000);
});
