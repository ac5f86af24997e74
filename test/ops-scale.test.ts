import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clusterView, compileClusterConfig, startLocalCluster, type LocalCluster } from '@freshet/cli';
import { uniqueName, waitFor } from '@freshet/testkit';

// Scaling a running cluster (real roles, no traffic needed): a second worker takes some of the
// 4 partitions without restarting anything; removing it hands them back to the first. A second
// serving node joins the queue group and reports running.
let lc: LocalCluster;

beforeAll(async () => {
  const cfg = compileClusterConfig({
    cluster: uniqueName('scale'),
    dataDir: await mkdtemp(join(tmpdir(), 'freshet-scale-')),
    partitions: 4,
    shards: { count: 1 },
    workers: { count: 1, options: { compute: { threads: 1 }, lease: { heartbeatMs: 250, ttlMs: 1500 } } },
  });
  lc = await startLocalCluster(cfg, { stopGraceMs: 5000, readyTimeoutMs: 90_000 });
}, 120_000);
afterAll(async () => {
  await lc?.stop();
});

const partitions = async () =>
  Object.fromEntries(clusterView(await lc.actors(), lc.cluster).workers.map((w) => [w.id, w.partitions]));

describe('scaling a running local cluster', () => {
  it('adds a worker that takes partitions, and removing it hands them back', async () => {
    await waitFor(async () => (await partitions())['worker-0']?.length === 4, {
      message: 'worker-0 owns all 4',
    });
    const pid0 = lc.processes.find((p) => p.id === 'worker-0')!.pid;
    const added = await lc.add('worker');
    expect(added.id).toBe('worker-1');
    let last = {};
    const split = await waitFor(
      async () => {
        const p = (last = await partitions());
        const a = p['worker-0'] ?? [];
        const b = p['worker-1'] ?? [];
        return b.length > 0 && a.length + b.length === 4 ? p : undefined;
      },
      { timeoutMs: 30_000, message: () => `worker-1 takes partitions; have ${JSON.stringify(last)}` },
    );
    // The assignment is the workers' (leases); every partition has exactly one owner.
    expect([...split['worker-0']!, ...split['worker-1']!].sort()).toEqual([0, 1, 2, 3]);
    expect(lc.processes.find((p) => p.id === 'worker-0')!.pid).toBe(pid0);
    await lc.remove('worker-1');
    await waitFor(
      async () => (await partitions())['worker-0']?.length === 4 && !('worker-1' in (await partitions())),
      {
        timeoutMs: 30_000,
        message: 'worker-0 owns all 4 again',
      },
    );
  });

  it('adds a serving node', async () => {
    const s = await lc.add('serving');
    expect(s.id).toBe('serving-1');
    const v = clusterView(await lc.actors(), lc.cluster);
    expect(v.serving.map((x) => [x.id, x.state])).toEqual([
      ['serving-0', 'running'],
      ['serving-1', 'running'],
    ]);
    await expect(lc.remove('shard-0')).rejects.toThrow(/shards cannot be removed/);
  });
});
