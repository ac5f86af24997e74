import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { placeShards, shardPlacement } from '@freshet/cli';
import { uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import {
  faultSpec,
  kill9,
  outstanding,
  prepareCluster,
  publishExamples,
  PushLedger,
  shardStatus,
  startRole,
  useRoleProcesses,
  workerOptions,
} from './fault-kit.js';

/**
 * A shard host killed (kill -9) while it holds its shards, and the operator moves them while it
 * is down (docs/resharding.md): the new host waits (the lease is the dead host's, whose log
 * may hold acknowledged updates the Object Store does not have), and when the dead host comes
 * back it runs each such shard once from its own data dir and hands it off. Counted: the moved
 * shards answer on the new host with every acknowledged update (version = push ids accepted),
 * and training goes on.
 */
describe('shard host: killed while holding shards, moved while down', () => {
  const nats = useNats();
  useRoleProcesses();
  const tempDir = useTempDirs();

  it('hands its shards off once it is back; nothing acknowledged is lost', async () => {
    const cluster = uniqueName('shcrash').replace(/[^A-Za-z0-9_-]/g, '');
    const SHARDS = 2;
    const PARTS = 2;
    const dir = tempDir('shard-host-crash');
    await prepareCluster(nats.nc, cluster, PARTS);
    const tap = await nats.connect('ledger');
    const ledger = PushLedger.start(tap, cluster);
    await tap.flush();
    await placeShards(nats.nc, cluster, { hosts: ['a'], shards: SHARDS, wait: false });
    const host = (name: string) =>
      startRole('shard-host', {
        cluster,
        host: name,
        nats: { servers: nats.url },
        dataDir: join(dir, name),
        // no periodic checkpoints and no mirrored log: after the kill only a's disk has the updates
        shard: { model: faultSpec, checkpointIntervalMs: 0, checkpoint: { walSegmentMs: 0 } },
      });
    let a = await host('a');
    expect(a.ready.shards).toEqual([0, 1]);
    await startRole('worker', workerOptions(cluster, 'w', SHARDS, PARTS, nats.url));
    await publishExamples(nats.nc, cluster, 0, 400, PARTS);
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTS)) === 0, {
      timeoutMs: 60_000,
      message: 'first events acked',
    });
    const versions = await Promise.all(
      [0, 1].map(async (i) => (await shardStatus(nats.nc, cluster, i)).version),
    );
    expect(versions.every((v) => v > 0)).toBe(true);

    await kill9(a);
    const b = await host('b');
    expect(b.ready.shards).toEqual([]);
    await placeShards(nats.nc, cluster, { hosts: ['b'], wait: false });
    // b waits: the leases are a's
    await new Promise((r) => setTimeout(r, 1500));
    const waiting = await shardPlacement(nats.nc, cluster);
    expect(waiting!.shards.map((s) => [s.host, s.lease?.holder, s.answers])).toEqual([
      ['b', 'a', false],
      ['b', 'a', false],
    ]);

    a = await host('a');
    await waitFor(
      async () => {
        const p = await shardPlacement(nats.nc, cluster);
        return p!.shards.every((s) => s.lease?.holder === 'b' && s.answers);
      },
      { timeoutMs: 60_000, message: 'both shards running on b' },
    );
    for (const i of [0, 1]) expect((await shardStatus(nats.nc, cluster, i)).version).toBe(versions[i]);

    // and training goes on there, each event once
    await publishExamples(nats.nc, cluster, 400, 200, PARTS);
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTS)) === 0, {
      timeoutMs: 60_000,
      message: 'later events acked',
    });
    await tap.flush();
    expect(ledger.examples()).toBe(600);
    for (const i of [0, 1])
      expect((await shardStatus(nats.nc, cluster, i)).version).toBe(ledger.acceptedBy(i));
  });
});
