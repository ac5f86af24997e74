import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultModel } from '@freshet/cli';
import { ensureStream, Publisher } from '@freshet/client';
import { createModel, type ModelConfigInput } from '@freshet/model';
import { startServing, type ServingNode } from '@freshet/serving';
import { startShard, type Shard } from '@freshet/shard';
import { startWorker, type Worker } from '@freshet/worker';
import { uniqueName, useNats, waitFor } from '@freshet/testkit';

const USERS = 40;
/** Requests per user; each shows items A and B, so twice as many labelled examples. */
const REQUESTS = 25;

/**
 * Personalization through the whole loop with the local cluster's default model: 40 users see
 * items A and B; users 0–19 always click A, users 20–39 always click B. Impressions and clicks
 * go through JetStream as a publisher sends them, the worker joins them (unclicked impressions
 * become negatives when their attribution window closes), two shards apply the updates and the
 * serving node ranks from its replica. After 50 labelled examples per user, users with
 * opposite tastes must get opposite rankings.
 */
describe('personalization', () => {
  const nats = useNats();
  const stops: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  });

  it('ranks each user’s preferred item first after 50 labelled examples per user', async () => {
    const cluster = uniqueName('pers');
    const partitions = 4;
    const model = { ...defaultModel, name: 'pers' } as ModelConfigInput;
    const spec = createModel(model).spec;
    const dir = await mkdtemp(join(tmpdir(), 'freshet-pers-'));
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
    const worker: Worker = await startWorker({
      cluster,
      nats: { servers: nats.url },
      model,
      shards: 2,
      partitions,
      batch: { size: 64, maxWaitMs: 50 },
      // Unclicked impressions become negatives when the window closes: keep it short here.
      joiner: { windowMs: 1500 },
      joinClock: { everyMs: 100, lagMs: 200 },
    });
    stops.push(() => worker.stop());
    await waitFor(() => serving.status().ready, { message: 'serving ready' });

    const prefers = (u: number) => (u < USERS / 2 ? 'item-a' : 'item-b');
    const publisher = new Publisher(nats.nc, { cluster, partitions });
    // Rounds of every user in turn, as traffic from many users interleaves.
    for (let r = 0; r < REQUESTS; r++) {
      for (let u = 0; u < USERS; u++) {
        const user = `user-${u}`;
        const request = `${user}-r${r}`;
        const ts = Date.now();
        const order = (u + r) % 2 === 0 ? ['item-a', 'item-b'] : ['item-b', 'item-a'];
        for (const [position, item] of order.entries())
          await publisher.publish({
            kind: 'impression',
            id: `${request}-${item}`,
            ts,
            user,
            request,
            item,
            position,
          });
        const item = prefers(u);
        await publisher.publish({ kind: 'click', id: `${request}-click`, ts: ts + 1, user, request, item });
      }
    }
    const stats = await publisher.close();
    expect(stats.failed).toBe(0);
    const labelled = USERS * REQUESTS * 2;
    await waitFor(() => worker.status().examples >= labelled, {
      timeoutMs: 60_000,
      message: () => `the worker to train ${labelled} examples (has ${worker.status().examples})`,
    });
    expect(worker.status().examples).toBe(labelled);

    const rank = async (u: number) => {
      const res = await fetch(`${serving.httpUrl}/v1/rank`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: `user-${u}`, candidates: [{ item: 'item-a' }, { item: 'item-b' }] }),
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { items: { item: string; score: number }[] };
      const score = (item: string) => body.items.find((x) => x.item === item)!.score;
      return { top: body.items[0]!.item, gap: score('item-a') - score('item-b') };
    };
    // Serving follows the shards' deltas: wait until every update is in its replica.
    const applied = () => shards.reduce((n, s) => n + s.status().version, 0);
    await waitFor(() => serving.status().version >= applied(), {
      message: 'serving to catch up with the shards',
    });
    const ranked = await Promise.all(Array.from({ length: USERS }, (_, u) => rank(u)));
    const correct = ranked.filter((r, u) => r.top === prefers(u)).length;
    expect(correct / USERS, `users ranked correctly: ${correct} of ${USERS}`).toBeGreaterThanOrEqual(0.95);
    // Opposite tastes, opposite A−B gaps: the groups are told apart, not just shifted together.
    const meanGap = (from: number, to: number) =>
      ranked.slice(from, to).reduce((a, r) => a + r.gap, 0) / (to - from);
    expect(meanGap(0, USERS / 2)).toBeGreaterThan(0);
    expect(meanGap(USERS / 2, USERS)).toBeLessThan(0);
  });
});
