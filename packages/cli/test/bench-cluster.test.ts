import { describe, expect, it } from 'vitest';
import { runClusterBench } from '@freshet/bench';
import { useTempDirs, writeCriteoFixture } from '@freshet/testkit';
import { localClusterHarness } from '../src/bench-harness.js';

const criteo = writeCriteoFixture(useTempDirs()('bench-criteo'), { rows: 400, seed: 4 }).path;

describe('runClusterBench', () => {
  it('runs a real local cluster on a few hundred Criteo examples and reports every headline field', async () => {
    const r = await runClusterBench(
      {
        data: `criteo:${criteo}`,
        limit: 300,
        shards: 2,
        workers: 1,
        partitions: 1,
        // sliced serving: each node holds one shard's rows (and the dense tensors)
        serving: 2,
        servingSlices: 2,
        batch: 64,
        freshnessLoad: 0,
        peer: false,
        timeoutMs: 50_000,
      },
      { harness: localClusterHarness() },
    );
    expect(r.examples).toBe(300);
    expect(r.examples_per_s as number).toBeGreaterThan(0);
    expect(r.progressive_auc as number).toBeGreaterThan(0);
    expect(r.progressive_auc as number).toBeLessThan(1);
    expect(r.rejected_pushes).toBe(0);
    expect(Object.keys(r.cpu_s as object).sort()).toEqual(['bench', 'nats', 'serving', 'shard', 'worker']);
    const pb = r.per_batch as { push: { rows: number; requests: number } };
    expect(pb.push.requests).toBeGreaterThanOrEqual(1);
    expect(pb.push.rows).toBeGreaterThan(0);
    expect(typeof r.freshness_p50_ms).toBe('number');
    const nodes = r.serving_nodes as { slice: string; rows: number; delta_messages: number }[];
    expect(nodes.map((n) => n.slice).sort()).toEqual(['0/2', '1/2']);
    for (const n of nodes) {
      expect(n.rows).toBeGreaterThan(0);
      expect(n.delta_messages).toBeGreaterThan(0);
    }
  }, 60_000);

  it('trains from a backlog: every event published before a worker starts, two batches in flight', async () => {
    const said: string[] = [];
    const r = await runClusterBench(
      {
        data: `criteo:${criteo}`,
        limit: 384,
        shards: 1,
        workers: 1,
        partitions: 2,
        serving: 0,
        batch: 128,
        backlog: true,
        inFlight: 2,
        freshnessLoad: 0,
        peer: false,
        timeoutMs: 50_000,
      },
      { harness: localClusterHarness(), progress: (m) => said.push(m) },
    );
    expect(r).toMatchObject({ examples: 384, backlog: true, in_flight: 2, rejected_pushes: 0 });
    // two batches in flight (the default is 1): a batch is pulled before the previous one's push
    expect(r.staleness_p99 as number).toBeGreaterThanOrEqual(1);
    const started = said.findIndex((m) => m.startsWith('backlog published'));
    expect(started).toBeGreaterThanOrEqual(0);
    expect(said.slice(0, started).some((m) => /learned [1-9]/.test(m))).toBe(false);
    await expect(
      runClusterBench(
        { data: `criteo:${criteo}`, backlog: true, rate: 100, peer: false },
        { harness: localClusterHarness() },
      ),
    ).rejects.toMatchObject({ code: 'CONFIG' });
  }, 60_000);
});
