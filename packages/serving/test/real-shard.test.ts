import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createModel } from '@freshet/model';
import {
  decodePullReply,
  decodePushReply,
  encodePull,
  encodePush,
  featureId,
  shardOfKey,
  subjects,
} from '@freshet/protocol';
import { parseReadyLine, requestBytes } from '@freshet/nats';
import { spawnChild, uniqueName, useNats, waitFor, type ChildHandle } from '@freshet/testkit';

/**
 * End to end with real processes: two shard processes (@freshet/shard's bin) and a serving
 * process (this package's bin). A gradient pushed to a shard reaches the serving node's scores
 * through the shard's deltas.
 */
const nats = useNats();
const root = fileURLToPath(new URL('../../..', import.meta.url));
const model = {
  kind: 'wide-deep',
  embeddingDim: 4,
  hidden: [8],
  features: {
    fields: [
      { kind: 'categorical', name: 'user' },
      { kind: 'categorical', name: 'item' },
    ],
  },
  // Plain SGD with lr 1 on the wide weights: a gradient of −3 moves a weight by exactly +3.
  tables: { wide: { optimizer: { kind: 'sgd', lr: 1 }, staleness: { policy: 'none' } } },
};
const { spec, layout } = createModel(model as never);
const WIDE = layout.wide!;
const children: ChildHandle[] = [];
afterAll(async () => {
  await Promise.all(children.map((c) => c.stop()));
});

const readyLine = (c: ChildHandle) => parseReadyLine(c.output());

describe('serving against real shard processes', () => {
  it('follows the shards: a pushed gradient moves the served score, with freshness measured', async () => {
    const cluster = uniqueName('e2e');
    const s = subjects(cluster);
    for (let i = 0; i < 2; i++) {
      const opts = {
        cluster,
        shard: i,
        shards: 2,
        nats: { servers: nats.url },
        model: spec,
        deltaIntervalMs: 5,
      };
      children.push(
        spawnChild('node', [
          join(root, 'packages/shard/dist/bin.js'),
          '--options-json',
          JSON.stringify(opts),
        ]),
      );
    }
    await waitFor(() => children.every((c) => readyLine(c)), {
      timeoutMs: 30_000,
      message: () => `shards ready: ${children.map((c) => c.output().slice(-500)).join('\n')}`,
    });
    const serving = spawnChild('node', [
      join(root, 'packages/serving/dist/bin.js'),
      '--options-json',
      JSON.stringify({ cluster, shards: 2, nats: { servers: nats.url }, model, id: 'e2e-serving' }),
    ]);
    children.push(serving);
    const ready = await waitFor(() => readyLine(serving), {
      timeoutMs: 30_000,
      message: () => `serving ready: ${serving.output().slice(-2000)}`,
    });
    const base = ready.http as string;
    const score = async () => {
      const r = await fetch(`${base}/v1/score`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: 'u', candidates: [{ item: 'a' }, { item: 'b' }] }),
      });
      expect(r.status).toBe(200);
      return (await r.json()) as { scores: number[]; version: number };
    };
    const before = await score();

    const key = new Uint32Array(2);
    featureId('item', 'b', key);
    const shard = shardOfKey(WIDE, key[0]!, key[1]!, 2);
    const pulled = decodePullReply(
      await requestBytes(nats.nc, s.pull(shard), encodePull({ tables: [{ t: WIDE, keys: key }] })),
    );
    const reply = decodePushReply(
      await requestBytes(
        nats.nc,
        s.push(shard),
        encodePush({
          id: uniqueName('push'),
          worker: 'test',
          clock: 0,
          base: pulled.version,
          eventTs: Date.now(),
          tables: [
            { t: WIDE, dim: 1, keys: key, grads: new Float32Array([-3]), counts: new Uint32Array([1]) },
          ],
        }),
      ),
    );
    expect(reply.applied).toBe(1);

    const after = await waitFor(
      async () => {
        const r = await score();
        return r.scores[1]! > before.scores[1]! + 0.3 ? r : undefined;
      },
      { message: 'served score of b to follow the push' },
    );
    expect(after.scores[0]).toBeCloseTo(before.scores[0]!, 6);
    expect(after.version).toBeGreaterThan(before.version);
    const status = (await (await fetch(`${base}/v1/status`)).json()) as {
      freshness: { count: number; p99Ms: number };
    };
    expect(status.freshness.count).toBeGreaterThanOrEqual(1);
    expect(status.freshness.p99Ms).toBeLessThan(5000);

    expect(await serving.stop()).toBe(0);
  });
});
