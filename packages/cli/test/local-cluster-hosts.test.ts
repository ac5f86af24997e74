import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { uniqueName, waitFor } from '@freshet/testkit';
import { compileClusterConfig, planActors } from '../src/cluster-config.js';
import { placeShards, shardPlacement } from '../src/shard-placement-ops.js';
import { startLocalCluster, type LocalCluster } from '../src/local-cluster.js';

describe('a local cluster on shard hosts (shards.hosts)', () => {
  it('plans shard-host processes (with their threads), refuses more hosts than shards', () => {
    const cfg = compileClusterConfig({ cluster: 'c', shards: { count: 4, hosts: 2 } });
    const shards = planActors(cfg, ['nats://127.0.0.1:4222']).filter((p) => p.role === 'shard');
    expect(shards.map((p) => [p.id, p.command, (p.options as { host: string }).host])).toEqual([
      ['shard-host-0', 'shard-host', 'h0'],
      ['shard-host-1', 'shard-host', 'h1'],
    ]);
    expect(() => compileClusterConfig({ cluster: 'c', shards: { count: 2, hosts: 3 } })).toThrow(
      /more shard hosts than shards/,
    );
    // shard threads per host: a host option, so only with hosts
    const threaded = compileClusterConfig({ cluster: 'c', shards: { count: 4, hosts: 2, threads: 3 } });
    const hostPlans = planActors(threaded, ['nats://127.0.0.1:4222']).filter((p) => p.role === 'shard');
    expect(hostPlans.map((p) => (p.options as { threads?: number }).threads)).toEqual([3, 3]);
    expect(() => compileClusterConfig({ cluster: 'c', shards: { count: 4, threads: 3 } })).toThrow(
      /threads are a shard host option/,
    );
    // a hosted shard's options are checked like a shard's, before anything starts
    expect(() =>
      compileClusterConfig({ cluster: 'c', shards: { count: 2, hosts: 1, options: { fsync: 'yes' } } }),
    ).toThrow(/fsync/);
  });

  it('starts the hosts, places the shards over them, and a shard moves while the cluster runs', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freshet-lch-'));
    const cfg = compileClusterConfig({
      cluster: uniqueName('lch').replace(/[^A-Za-z0-9_-]/g, ''),
      dataDir: dir,
      partitions: 2,
      // each host's shards in a shard thread of its own
      shards: { count: 4, hosts: 2, threads: 1, options: { checkpointIntervalMs: 0 } },
      workers: { count: 1, options: { compute: { threads: 1 } } },
      serving: { count: 0 },
    });
    let lc: LocalCluster | undefined;
    try {
      lc = await startLocalCluster(cfg, { stopGraceMs: 5000, readyTimeoutMs: 90_000 });
      expect(lc.processes.filter((p) => p.role === 'shard').map((p) => p.id)).toEqual([
        'shard-host-0',
        'shard-host-1',
      ]);
      const ids = async () =>
        (await lc!.actors())
          .filter((a) => a.role === 'shard')
          .map((a) => a.id)
          .sort();
      await waitFor(async () => (await ids()).length === 4, { timeoutMs: 30_000, message: 'four shards' });
      expect(await ids()).toEqual(['shard-0', 'shard-1', 'shard-2', 'shard-3']);
      const where = await shardPlacement(lc.nc, cfg.cluster);
      expect(where!.shards.map((s) => [s.host, s.lease?.holder, s.answers])).toEqual([
        ['h0', 'h0', true],
        ['h0', 'h0', true],
        ['h1', 'h1', true],
        ['h1', 'h1', true],
      ]);
      // everything onto h1, then back
      const one = await placeShards(lc.nc, cfg.cluster, { hosts: ['h1'], timeoutMs: 60_000 });
      expect(one.moved.map((m) => m.shard)).toEqual([0, 1]);
      const back = await placeShards(lc.nc, cfg.cluster, { hosts: ['h0', 'h1'], timeoutMs: 60_000 });
      // the fewest moves: two shards go to h0, whichever they are
      expect(back.hosts).toEqual(['h1', 'h1', 'h0', 'h0']);
      expect(back.moved).toHaveLength(2);
      await waitFor(async () => (await ids()).join() === 'shard-0,shard-1,shard-2,shard-3', {
        timeoutMs: 20_000,
        message: 'four shards after the moves',
      });
    } finally {
      await lc?.stop();
    }
  });
});
