import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import {
  faultModel,
  outstanding,
  prepareCluster,
  publishExamples,
  shardOptions,
  startRole,
  workerOptions,
  useRoleProcesses,
  servingScores,
} from './fault-kit.js';

/**
 * Load: 2 shard processes, 1 worker process, 2 serving processes, 4 partitions, 1,600
 * pre-labelled events in 2 waves; serving node `s1` is stopped (SIGKILL) after the first wave and
 * started again while the second wave trains. Counted: after every event is acked, both nodes'
 * scores for 40 (user, item) pairs the load touched agree to 1e-6, and differ from the untrained
 * scores (so the restarted node caught up on what it missed rather than both serving defaults).
 */
describe('fault: a serving node restarted', () => {
  const nats = useNats();
  useRoleProcesses();
  const tempDir = useTempDirs();

  it('catches up and serves the same scores as its peer', async () => {
    const cluster = uniqueName('fserve').replace(/[^A-Za-z0-9_-]/g, '');
    const SHARDS = 2;
    const PARTS = 4;
    const WAVE = 800;
    const dir = tempDir('fault-serving');
    await prepareCluster(nats.nc, cluster, PARTS);
    await Promise.all(
      [0, 1].map((i) =>
        startRole('shard', shardOptions(cluster, i, SHARDS, nats.url, join(dir, `shard-${i}`))),
      ),
    );
    const servingOpts = (id: string) => ({
      cluster,
      id,
      shards: SHARDS,
      nats: { servers: nats.url },
      model: faultModel,
    });
    const s0 = await startRole('serving', servingOpts('s0'));
    let s1 = await startRole('serving', servingOpts('s1'));
    await startRole('worker', workerOptions(cluster, 'w0', SHARDS, PARTS, nats.url));

    const pairs = Array.from({ length: 40 }, (_, i) => ({ user: `u${i * 37}`, item: `i${(i * 37) % 50}` }));
    const scores = (node: typeof s0) => servingScores(node, pairs);
    const untrained = await scores(s0);

    await publishExamples(nats.nc, cluster, 0, WAVE, PARTS);
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTS)) === 0, {
      timeoutMs: 30_000,
      message: 'first wave acked',
    });
    s1.handle.child.kill('SIGKILL');
    await s1.handle.exited;
    const second = publishExamples(nats.nc, cluster, WAVE, WAVE, PARTS);
    s1 = await startRole('serving', servingOpts('s1'));
    await second;
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTS)) === 0, {
      timeoutMs: 30_000,
      message: 'second wave acked',
    });

    let last: { a: number[]; b: number[] } | undefined;
    await waitFor(
      async () => {
        const [a, b] = await Promise.all([scores(s0), scores(s1)]);
        last = { a, b };
        return a.every((x, i) => Math.abs(x - b[i]!) < 1e-6);
      },
      { timeoutMs: 20_000, message: () => `same scores on both nodes: ${JSON.stringify(last)}` },
    );
    const moved = last!.a.filter((x, i) => Math.abs(x - untrained[i]!) > 1e-4).length;
    expect(moved).toBeGreaterThan(pairs.length / 2);
  });
});
