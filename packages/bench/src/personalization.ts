import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { ensureStream, Publisher } from '@freshet/client';
import { createModel, type ModelConfigInput } from '@freshet/model';
import { connectNats, startNatsServer, type NatsServerHandle } from '@freshet/nats';
import { FreshetError } from '@freshet/protocol';
import { startServing, type ServingNode } from '@freshet/serving';
import { startShard, type Shard } from '@freshet/shard';
import { startWorker, type Worker, type WorkerOptionsInput } from '@freshet/worker';

/**
 * The two-group personalization check through the whole loop: users 0..n/2−1 always click item A,
 * the others always click item B. Each request shows both items (alternating order); impressions
 * and clicks go through JetStream as a publisher sends them, a worker joins them (an unclicked
 * impression becomes a negative when its attribution window closes), shards apply the updates,
 * and a serving node ranks A and B for every user from its replica. Users with opposite tastes
 * must get opposite rankings. `test/personalization.test.ts` asserts on it; `freshet bench
 * personalization` prints it.
 */

/** Options of {@link runPersonalization}. */
export interface PersonalizationOptions {
  /** The model every actor runs (the CLI passes the local cluster's default model). */
  model: ModelConfigInput;
  /** A running nats-server with JetStream; without one, one is started and stopped. */
  url?: string;
  cluster?: string;
  users?: number;
  /** Requests per user; each shows A and B, so twice as many labelled examples per user. */
  requests?: number;
  partitions?: number;
  shards?: number;
  /** Laid over the worker's options (batch 64, a 1.5 s attribution window). */
  worker?: Partial<WorkerOptionsInput>;
  /** Called once every example is trained and serving caught up, before ranking. */
  inspect?: (world: PersonalizationWorld) => Promise<void>;
  /** Deadline of the training and catch-up waits (default 60 s each). */
  timeoutMs?: number;
}

/** The running actors, for {@link PersonalizationOptions.inspect}. */
export interface PersonalizationWorld {
  cluster: string;
  url: string;
  nc: NatsConnection;
  shards: readonly Shard[];
  worker: Worker;
  serving: ServingNode;
}

/** One user's ranking of A and B. */
export interface UserRanking {
  user: string;
  prefers: 'item-a' | 'item-b';
  top: string;
  /** score(A) − score(B). */
  gap: number;
}

export interface PersonalizationResult {
  bench: 'personalization';
  model: string;
  users: number;
  users_correct: number;
  share_correct: number;
  labelled_per_user: number;
  examples: number;
  /** Mean score(A) − score(B) of the users who click A (should be > 0) and of those who click B (< 0). */
  mean_gap_prefers_a: number;
  mean_gap_prefers_b: number;
  seconds: number;
  rankings: UserRanking[];
}

async function until(ok: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!ok()) {
    if (performance.now() > end) throw new FreshetError('TIMEOUT', `personalization: ${what()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Runs the check (see the file comment) and stops everything it started. */
export async function runPersonalization(o: PersonalizationOptions): Promise<PersonalizationResult> {
  const users = o.users ?? 40;
  const requests = o.requests ?? 25;
  const partitions = o.partitions ?? 4;
  const shardCount = o.shards ?? 2;
  const timeoutMs = o.timeoutMs ?? 60_000;
  const cluster = o.cluster ?? `pers-${process.pid}-${Date.now().toString(36)}`;
  const model: ModelConfigInput = { ...o.model, name: cluster };
  const stops: Array<() => Promise<unknown>> = [];
  const t0 = performance.now();
  try {
    let url = o.url;
    if (!url) {
      const server: NatsServerHandle = await startNatsServer();
      stops.push(() => server.stop());
      url = server.url;
    }
    const nc = await connectNats({ servers: url }, `freshet-personalization-${cluster}`);
    stops.push(() => nc.close());
    const dir = await mkdtemp(join(tmpdir(), 'freshet-pers-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    await ensureStream(nc, { cluster, partitions });

    const spec = createModel(model).spec;
    const shards: Shard[] = [];
    for (let shard = 0; shard < shardCount; shard++) {
      const sh = await startShard({
        cluster,
        shard,
        shards: shardCount,
        nats: { servers: url },
        model: spec,
        dataDir: join(dir, `shard-${shard}`),
      });
      shards.push(sh);
      stops.push(() => sh.stop());
    }
    const serving = await startServing({ cluster, shards: shardCount, nats: { servers: url }, model });
    stops.push(() => serving.stop());
    const worker = await startWorker({
      cluster,
      nats: { servers: url },
      model,
      shards: shardCount,
      partitions,
      batch: { size: 64, maxWaitMs: 50 },
      // Unclicked impressions become negatives when the window closes: keep it short here. Each
      // user clicks once a request, `requests` times in a few seconds: spam to the default
      // per-user bucket (burst 20, 60 a minute), which would drop the last rounds' clicks and
      // train their impressions as negatives, how many depending on how fast publishing went.
      joiner: { windowMs: 1500, rateLimit: { enabled: false } },
      joinClock: { everyMs: 100, lagMs: 200 },
      ...o.worker,
    });
    stops.push(() => worker.stop());
    await until(
      () => serving.status().ready,
      timeoutMs,
      () => 'serving never became ready',
    );

    const prefers = (u: number) => (u < users / 2 ? 'item-a' : 'item-b');
    const publisher = new Publisher(nc, { cluster, partitions });
    // Rounds of every user in turn, as traffic from many users interleaves.
    for (let r = 0; r < requests; r++) {
      for (let u = 0; u < users; u++) {
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
    if (stats.failed > 0)
      throw new FreshetError('UNAVAILABLE', `personalization: ${stats.failed} publishes failed`);
    const labelled = users * requests * 2;
    await until(
      () => worker.status().examples >= labelled,
      timeoutMs,
      () => `the worker trained ${worker.status().examples} of ${labelled} examples`,
    );
    // Serving follows the shards' deltas: wait until every update is in its replica.
    const applied = () => shards.reduce((n, s) => n + s.status().version, 0);
    await until(
      () => serving.status().version >= applied(),
      timeoutMs,
      () => `serving at version ${serving.status().version} of ${applied()}`,
    );
    await o.inspect?.({ cluster, url, nc, shards, worker, serving });

    const rank = async (u: number): Promise<UserRanking> => {
      const res = await fetch(`${serving.httpUrl}/v1/rank`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: `user-${u}`, candidates: [{ item: 'item-a' }, { item: 'item-b' }] }),
      });
      if (res.status !== 200) throw new FreshetError('UNAVAILABLE', `rank answered ${res.status}`);
      const body = (await res.json()) as { items: { item: string; score: number }[] };
      const score = (item: string) => body.items.find((x) => x.item === item)!.score;
      return {
        user: `user-${u}`,
        prefers: prefers(u),
        top: body.items[0]!.item,
        gap: score('item-a') - score('item-b'),
      };
    };
    const rankings = await Promise.all(Array.from({ length: users }, (_, u) => rank(u)));
    const correct = rankings.filter((r) => r.top === r.prefers).length;
    const meanGap = (g: 'item-a' | 'item-b') => {
      const xs = rankings.filter((r) => r.prefers === g);
      return xs.reduce((a, r) => a + r.gap, 0) / Math.max(1, xs.length);
    };
    const r4 = (x: number) => Math.round(x * 10_000) / 10_000;
    return {
      bench: 'personalization',
      model: String(o.model.kind),
      users,
      users_correct: correct,
      share_correct: r4(correct / users),
      labelled_per_user: requests * 2,
      examples: worker.status().examples,
      mean_gap_prefers_a: r4(meanGap('item-a')),
      mean_gap_prefers_b: r4(meanGap('item-b')),
      seconds: Math.round((performance.now() - t0) / 100) / 10,
      rankings,
    };
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  }
}
