import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureStream } from '@freshet/client';
import { createModel, type ModelConfigInput } from '@freshet/model';
import { featureId, partitionOf, shardOfKey, subjects } from '@freshet/protocol';
import { startServing, type ServingNode } from '@freshet/serving';
import { startShard, type Shard } from '@freshet/shard';
import { startWorker, type Worker } from '@freshet/worker';
import { uniqueName, useNats, waitFor } from '@freshet/testkit';

/**
 * The whole loop, end to end over a real nats-server: a JSON feedback event published to
 * JetStream → a worker turns it into an example and computes a gradient in a piscina thread →
 * two shards that own the keys by hash apply Adam → the serving node receives the changed rows →
 * its score for that user and item moves. Every wait is a condition with a deadline.
 */
describe('walking skeleton', () => {
  const nats = useNats();
  const stops: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  });

  it('a published click moves the served score for that user and item', async () => {
    const cluster = uniqueName('skel');
    const s = subjects(cluster);
    const partitions = 2;
    const model: ModelConfigInput = {
      name: 'skeleton',
      kind: 'lr',
      features: {
        fields: [
          { kind: 'categorical', name: 'user' },
          { kind: 'categorical', name: 'item', tower: 'item' },
        ],
      },
      optimizer: { kind: 'adam', lr: 0.05 },
    };
    const spec = createModel(model).spec;
    const dir = await mkdtemp(join(tmpdir(), 'freshet-skel-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    await ensureStream(nats.nc, { cluster, partitions });

    const shards: Shard[] = [];
    for (const shard of [0, 1]) {
      const sh = await startShard({
        cluster,
        shard,
        shards: 2,
        nats: { servers: nats.url },
        model: spec,
        dataDir: join(dir, `shard-${shard}`),
      });
      shards.push(sh);
      stops.push(() => sh.stop());
    }
    const serving: ServingNode = await startServing({
      cluster,
      shards: 2,
      nats: { servers: nats.url },
      model,
    });
    stops.push(() => serving.stop());
    await waitFor(() => serving.status().ready, { message: 'serving ready' });

    const score = async () => {
      const res = await fetch(`${serving.httpUrl}/v1/score`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: 'alice', candidates: [{ item: 'book-1' }] }),
      });
      expect(res.status).toBe(200);
      return ((await res.json()) as { scores: number[] }).scores[0]!;
    };
    const before = await score();

    // The shards that own the user's and the item's rows must both have applied an update.
    const key = new Uint32Array(4);
    featureId('user', 'alice', key, 0);
    featureId('item', 'book-1', key, 2);
    const userTable = spec.tables.findIndex((t) => t.kind === 'sparse');
    const owners = new Set([
      shardOfKey(userTable, key[0]!, key[1]!, 2),
      shardOfKey(userTable, key[2]!, key[3]!, 2),
    ]);

    const worker: Worker = await startWorker({
      cluster,
      nats: { servers: nats.url },
      model,
      shards: 2,
      partitions,
      batch: { size: 1, maxWaitMs: 5 },
    });
    stops.push(() => worker.stop());

    // A labeller in any language: plain JSON on the partition's labels subject.
    const event = {
      v: 1,
      kind: 'example',
      id: uniqueName('ev'),
      ts: Date.now(),
      user: 'alice',
      item: 'book-1',
      label: 1,
      features: { user: 'alice', item: 'book-1' },
    };
    const ack = await nats.nc
      .jetstream()
      .publish(s.labels(partitionOf('alice', partitions)), JSON.stringify(event), {
        msgID: event.id,
      });
    expect(ack.duplicate).toBe(false);

    const after = await waitFor(
      async () => {
        const v = await score();
        return v > before + 1e-3 ? v : null;
      },
      { timeoutMs: 30_000, message: 'the served score to rise after a click' },
    );
    expect(after).toBeGreaterThan(before);
    // Both shards applied updates (the rows are spread by hash), and the event was acked.
    for (const owner of owners) expect(shards[owner]!.status().version).toBeGreaterThan(0);
    await waitFor(
      async () => {
        const jsm = await nats.nc.jetstreamManager();
        let pending = 0;
        for await (const c of jsm.consumers.list(s.feedbackStream))
          pending += c.num_ack_pending + c.num_pending;
        return pending === 0;
      },
      { message: 'the event to be acked after the shards accepted it' },
    );
    expect(worker.status().examples).toBeGreaterThanOrEqual(1);
  });
});
