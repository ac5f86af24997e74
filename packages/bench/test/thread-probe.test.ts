import { describe, expect, it } from 'vitest';
import { measureThreadHandoff } from '../src/thread-probe.js';

// The cost probe's hand-off figures come from a real shard thread and a real nats-server.
describe('thread hand-off probe', () => {
  it('times both ends of a part handed to a shard thread', async () => {
    const r = await measureThreadHandoff({ calls: 2000 });
    // a part costs its sender something, and a lone part (a whole round of posts) more than a
    // pipelined one
    expect(r.threadPartUs).toBeGreaterThan(0);
    expect(r.threadPartSerialUs).toBeGreaterThan(r.threadPartUs);
    // the receiving side: a busy time less the shard's own, never negative, never absurd
    expect(r.threadPartRecvUs).toBeGreaterThanOrEqual(0);
    expect(r.threadPartRecvUs).toBeLessThan(1000);
  }, 60_000);
});
