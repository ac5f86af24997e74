import { afterAll, describe, expect, it } from 'vitest';
import { createModel, mergeRunningStats, type RunningStats } from '@freshet/model';
import { encodeEncoderStats, encoderStatsKey, shardOfDense, subjects } from '@freshet/protocol';
import { uniqueName, useNats, waitFor } from '@freshet/testkit';
import { ServingNode } from '../src/serving-node.js';
import { FakeShard } from './fake-shard.js';

/**
 * Serving standardises a numeric feature with the statistics training saw: the workers' records
 * in KV, merged, never its own requests. Model: logistic regression whose only non-zero weight is
 * the standardised `price` (lin = [1, 0]), so a score is σ((price − mean) / sd) of the merge.
 */
const nats = useNats();
const model = {
  kind: 'lr',
  features: {
    fields: [
      { kind: 'categorical', name: 'user' },
      { kind: 'categorical', name: 'item' },
      { kind: 'numeric', name: 'price', transform: 'standardise' },
    ],
  },
};
const { spec, layout } = createModel(model as never);
const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));
const expected = (price: number, s: RunningStats) => sigmoid((price - s.mean) / Math.sqrt(s.m2 / (s.n - 1)));

const nodes: ServingNode[] = [];
const shards: FakeShard[] = [];
afterAll(async () => {
  await Promise.allSettled(nodes.map((n) => n.stop()));
  shards.forEach((s) => s.stop());
});

describe('standardised features at serving', () => {
  it("scale with the workers' merged statistics, follow their updates, and ignore requests", async () => {
    const cluster = uniqueName('encst').replace(/[^A-Za-z0-9_-]/g, '');
    const kv = await nats.nc.jetstream().views.kv(subjects(cluster).kvBucket, { history: 1 });
    const put = (worker: string, at: number, price: RunningStats) =>
      kv.put(encoderStatsKey(worker), encodeEncoderStats({ v: 1, worker, at, stats: { price } }));
    const w1 = { n: 3, mean: 20, m2: 200 }; // prices 10, 20, 30
    const w2 = { n: 2, mean: 45, m2: 50 }; // prices 40, 50
    await put('w1', Date.now(), w1);
    await put('w2', Date.now(), w2);
    await put('w-gone', 0, { n: 1000, mean: -500, m2: 1 }); // a week old: left out
    await kv.put(encoderStatsKey('w-bad'), new TextEncoder().encode('{"v":1}')); // logged, ignored

    for (let s = 0; s < 2; s++) {
      const f = new FakeShard(nats.nc, cluster, s, 2, spec);
      await f.start();
      shards.push(f);
    }
    const lin = layout.lin!.tables[0]!;
    shards[shardOfDense(spec.tables[lin]!, 2)]!.set(lin, [[0, 0, new Float32Array([1, 0])]]);
    const node = new ServingNode(
      { cluster, shards: 2, model, http: { port: 0 }, encoderStatsMaxAgeMs: 3600_000 },
      { nc: await nats.connect('serving-stats') },
    );
    nodes.push(node);
    await node.start();
    await node.whenReady();
    await waitFor(() => node.status().encoderStats?.workers === 2, {
      message: () => `both live records merged: ${JSON.stringify(node.status().encoderStats)}`,
    });
    const merged = mergeRunningStats([{ price: w1 }, { price: w2 }]).price!;
    expect(merged).toMatchObject({ n: 5, mean: 30 });
    expect(node.status().encoderStats?.examples).toEqual({ price: 5 });

    const score = async (prices: number[]) => {
      const r = await fetch(`${node.httpUrl!}/v1/score`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          user: 'u1',
          candidates: prices.map((price, i) => ({ item: `i${i}`, features: { price } })),
        }),
      });
      expect(r.status).toBe(200);
      return ((await r.json()) as { scores: number[] }).scores;
    };
    const prices = [60, 30, 0];
    const first = await score(prices);
    prices.forEach((p, i) => expect(first[i]).toBeCloseTo(expected(p, merged), 5));
    // requests with extreme prices do not move the statistics
    await score([1e6, 1e6, 1e6]);
    expect(await score(prices)).toEqual(first);

    // a worker's newer record replaces its old one
    const w2b = { n: 5, mean: 100, m2: 400 };
    await put('w2', Date.now(), w2b);
    const next = mergeRunningStats([{ price: w1 }, { price: w2b }]).price!;
    await waitFor(() => node.status().encoderStats?.examples.price === next.n, {
      message: 'w2 update followed',
    });
    const after = await score(prices);
    prices.forEach((p, i) => expect(after[i]).toBeCloseTo(expected(p, next), 5));
  });

  it('are found once the KV bucket appears, when serving started before it', async () => {
    const cluster = uniqueName('encst').replace(/[^A-Za-z0-9_-]/g, '');
    for (let s = 0; s < 2; s++) {
      const f = new FakeShard(nats.nc, cluster, s, 2, spec);
      await f.start();
      shards.push(f);
    }
    const node = new ServingNode(
      { cluster, shards: 2, model, http: { port: 0 } },
      { nc: await nats.connect('serving-early') },
    );
    nodes.push(node);
    await node.start();
    await node.whenReady();
    expect(node.status().encoderStats).toEqual({ workers: 0, examples: {} });
    const kv = await nats.nc.jetstream().views.kv(subjects(cluster).kvBucket, { history: 1 });
    const stats = { price: { n: 4, mean: 2, m2: 8 } };
    await kv.put(encoderStatsKey('w1'), encodeEncoderStats({ v: 1, worker: 'w1', at: Date.now(), stats }));
    await waitFor(() => node.status().encoderStats?.workers === 1, {
      timeoutMs: 15_000,
      message: () => `record found: ${JSON.stringify(node.status().encoderStats)}`,
    });
    expect(node.status().encoderStats?.examples).toEqual({ price: 4 });
  });
});
