import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Publisher, publishLive, SyntheticWorld } from '@freshet/client';
import { parseReadyLine } from '@freshet/nats';
import { uniqueName, waitFor } from '@freshet/testkit';
import { clusterView } from '../src/actor-view.js';
import { compileClusterConfig } from '../src/cluster-config.js';
import { roleNodeArgs, startLocalCluster, type LocalCluster } from '../src/local-cluster.js';
import { sendAdmin, targets } from '../src/commands/admin.js';

// Admin commands against real role processes (`freshet shard|worker|serve`): a small cluster
// (1 shard, 1 worker, 1 serving node) learns from ~300 synthetic events/s; checkpoint and
// restore go to the shard, drain to each role, and each drained process exits with code 0.
// Every role also serves its own Prometheus metrics (--metrics-port 0).
let lc: LocalCluster;
const exits = new Map<string, unknown>();
const ac = new AbortController();
let publishing: Promise<void> = Promise.resolve();

/**
 * The admin targets: one actor by id, or `count` of `roles`. Discovery listens for a moment, and
 * on a loaded machine an actor's answer can miss a round: wait for it instead of failing.
 */
function discovered(roles: Array<'shard' | 'worker' | 'serving'>, want: string | number) {
  return waitFor(
    async () => {
      const t = await targets(lc.nc, lc.cluster, roles, typeof want === 'string' ? want : undefined).catch(
        () => null,
      );
      return t && (typeof want === 'string' || t.length >= want) ? t : null;
    },
    { timeoutMs: 20_000, message: `${String(want)} discovered` },
  );
}

beforeAll(async () => {
  const cfg = compileClusterConfig({
    cluster: uniqueName('admr'),
    dataDir: await mkdtemp(join(tmpdir(), 'freshet-admr-')),
    partitions: 2,
    shards: { count: 1, options: { checkpointIntervalMs: 0 } },
    workers: {
      count: 1,
      options: { compute: { threads: 1 }, batch: { size: 64, maxWaitMs: 20 }, joiner: { windowMs: 200 } },
    },
  });
  lc = await startLocalCluster(cfg, {
    stopGraceMs: 5000,
    readyTimeoutMs: 90_000,
    restartOnExit: false,
    nodeArgs: (p) => [...roleNodeArgs(p), '--metrics-port', '0'],
    log: {
      info() {},
      warn() {},
      debug() {},
      error(obj: { actor?: string; code?: unknown }) {
        if (obj.actor) exits.set(obj.actor, obj.code);
      },
    },
  });
  const start = Date.now();
  const world = new SyntheticWorld({
    seed: 3,
    requests: 100_000,
    startTs: start,
    intervalMs: 3,
    idPrefix: `a${start}`,
  });
  const pub = new Publisher(lc.nc, { cluster: lc.cluster, partitions: 2 });
  publishing = (async () => {
    await publishLive(pub, world.events(), { signal: ac.signal });
    await pub.close();
  })();
}, 120_000);
afterAll(async () => {
  ac.abort();
  await publishing.catch(() => undefined);
  await lc?.stop();
});

const shardVersion = async () => clusterView(await lc.actors(), lc.cluster).shards[0]?.version ?? 0;

function metricsUrl(id: string): string {
  const out = lc.processes.find((p) => p.id === id)!.output();
  const metrics = parseReadyLine(out)?.metrics;
  if (typeof metrics === 'string') return metrics;
  throw new Error(`${id} printed no metrics URL in its ready line:\n${out}`);
}

describe('admin commands on real role processes', () => {
  it('every role serves its metrics with {cluster, role, id} labels', async () => {
    for (const [id, role] of [
      ['shard-0', 'shard'],
      ['worker-0', 'worker'],
      ['serving-0', 'serving'],
    ] as const) {
      const url = metricsUrl(id);
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const text = await (await fetch(url)).text();
      expect(text).toContain(`freshet_actor_up{cluster="${lc.cluster}",role="${role}",id="${id}"} 1`);
    }
  });

  it('checkpoint writes one on the shard; restore reloads the same version while running', async () => {
    await waitFor(async () => (await shardVersion()) > 20, { timeoutMs: 60_000, message: 'shard learns' });
    const shard = await discovered(['shard'], 'shard-0');
    const [ck] = await sendAdmin(lc.nc, lc.cluster, shard, 'checkpoint');
    expect(ck).toMatchObject({ ok: true, id: 'shard-0' });
    expect(ck!.detail!.bytes).toBeGreaterThan(0);
    expect(typeof ck!.detail!.segment).toBe('number');
    await waitFor(async () => (await shardVersion()) > (ck!.detail!.version as number) + 5, {
      message: 'more pushes after the checkpoint',
    });
    const [rs] = await sendAdmin(lc.nc, lc.cluster, shard, 'restore');
    expect(rs).toMatchObject({ ok: true, id: 'shard-0' });
    const d = rs!.detail as { version: number; versionBefore: number; replayedRecords: number };
    expect(d.version).toBe(d.versionBefore);
    expect(d.replayedRecords).toBeGreaterThan(0);
    // Still learning after the restore.
    await waitFor(async () => (await shardVersion()) > d.version, { message: 'pushes after restore' });

    const [bad] = await sendAdmin(lc.nc, lc.cluster, shard, 'restore', { checkpoint: 'checkpoint-99999' });
    expect(bad).toMatchObject({ ok: false, error: { code: 'CONFIG' } });
    expect(bad!.error!.message).toMatch(/only the newest is kept/);
  });

  it('says which commands a role does not support', async () => {
    const w = await discovered(['worker'], 'worker-0');
    const [r] = await sendAdmin(lc.nc, lc.cluster, w, 'checkpoint', {}, 5000);
    expect(r).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } });
    expect(r!.error!.message).toMatch(/worker worker-0 does not support checkpoint/);
  });

  it('forget is answered by the shard and the worker processes (freshet user forget)', async () => {
    const actors = await discovered(['shard', 'worker'], 2);
    const replies = await sendAdmin(lc.nc, lc.cluster, actors, 'forget', { user: 'no-such-user' }, 10_000);
    expect(replies.map((r) => [r.id, r.ok]).sort()).toEqual([
      ['shard-0', true],
      ['worker-0', true],
    ]);
    const shard = replies.find((r) => r.role === 'shard')!;
    expect(Object.values(shard.detail!.removed as Record<string, number>).every((n) => n === 0)).toBe(true);
    expect(replies.find((r) => r.role === 'worker')!.detail).toMatchObject({ joiner: { pending: 0 } });
    const [bad] = await sendAdmin(lc.nc, lc.cluster, [actors[0]!], 'forget', {}, 10_000);
    expect(bad).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } });
  });

  it('drain stops worker, serving node and shard; each process exits 0 and leaves the service API', async () => {
    for (const id of ['worker-0', 'serving-0', 'shard-0']) {
      const t = await discovered(['shard', 'worker', 'serving'], id);
      const [r] = await sendAdmin(lc.nc, lc.cluster, t, 'drain', { timeoutMs: 5000 }, 20_000);
      expect(r, id).toMatchObject({ ok: true, id });
      const proc = lc.processes.find((p) => p.id === id)!;
      await waitFor(() => !proc.running, { timeoutMs: 10_000, message: `${id} exits after drain` });
      await waitFor(() => exits.has(id), { message: `${id} exit seen` });
      expect(exits.get(id), `${id} exit code`).toBe(0);
      await waitFor(async () => !(await lc.actors()).some((a) => a.id === id), {
        message: `${id} left the service API`,
      });
    }
  });
});
