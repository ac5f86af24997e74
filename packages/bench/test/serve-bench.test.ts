import { describe, expect, it } from 'vitest';
import { runServeBench } from '@freshet/bench';

/**
 * `bench serve --slices 2` end to end, briefly: a real nats-server, the node under load holding
 * slice 0 in this process, the other slice's node a serving process of its own, a load generator
 * in a forked process. What it reports must say the ranks were scored across both slices.
 */
describe('runServeBench', () => {
  it('ranks over two slices, the other one in a process of its own', async () => {
    const r = await runServeBench({
      slices: 2,
      rate: 40,
      seconds: 1,
      warmupSeconds: 0.3,
      phases: ['http'],
      skipInProcess: true,
      candidates: 20,
    });
    expect(r).toMatchObject({ bench: 'serve', slices: 2, errors: 0, slice_failed: 0 });
    expect(r.rps as number).toBeGreaterThan(30);
    // every rank asked the other slice once (the ranks of one turn share a request)
    expect(r.slice_asks_per_rank).toBe(1);
    expect(r.slice_requests_per_rank as number).toBeGreaterThan(0);
    expect(r.slice_requests_per_rank as number).toBeLessThanOrEqual(1);
    // half of the stand-in shards' rows: the node holds one of two slices
    expect(r.replica_rows as number).toBeGreaterThan(0);
  }, 90_000);
});
