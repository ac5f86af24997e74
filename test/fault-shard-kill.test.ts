import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import {
  denseShard,
  kill9,
  outstanding,
  prepareCluster,
  publishExamples,
  PushLedger,
  shardOptions,
  shardStatus,
  startRole,
  workerOptions,
  useRoleProcesses,
} from './fault-kit.js';

/**
 * Load: 2 shard processes, 2 worker processes, 4 partitions, 2,400 pre-labelled events published
 * in 3 waves of 800; the shard that owns the dense table is killed with SIGKILL right after the
 * second wave and started again on the same data directory.
 * Counted: (1) examples applied = Σ over distinct push ids accepted (applied or duplicate) of
 * the batch's dense example count = 2,400 exactly (none lost, none twice); (2) after restore,
 * each shard's version (pushes applied, restored from checkpoint + log) equals the distinct push
 * ids it accepted: every acknowledged update is present; (3) nothing left unacked.
 */
describe('fault: kill -9 of a shard', () => {
  const nats = useNats();
  useRoleProcesses();
  const tempDir = useTempDirs();

  it('restarts, restores, every acknowledged event is applied exactly once, workers resume', async () => {
    const cluster = uniqueName('fshard').replace(/[^A-Za-z0-9_-]/g, '');
    const SHARDS = 2;
    const PARTS = 4;
    const WAVE = 800;
    const dir = tempDir('fault-shard');
    await prepareCluster(nats.nc, cluster, PARTS);
    const tap = await nats.connect('ledger');
    const ledger = PushLedger.start(tap, cluster);
    await tap.flush();

    const shardOpts = (i: number) => shardOptions(cluster, i, SHARDS, nats.url, join(dir, `shard-${i}`));
    const shards = await Promise.all([0, 1].map((i) => startRole('shard', shardOpts(i))));
    await Promise.all(
      ['wa', 'wb'].map((id) => startRole('worker', workerOptions(cluster, id, SHARDS, PARTS, nats.url))),
    );

    await publishExamples(nats.nc, cluster, 0, WAVE, PARTS);
    await publishExamples(nats.nc, cluster, WAVE, WAVE, PARTS);
    const victim = denseShard(SHARDS);
    const inFlightAtKill = await outstanding(nats.nc, cluster, PARTS);
    await kill9(shards[victim]!);
    const restarted = await startRole('shard', shardOpts(victim));
    expect(restarted.handle.output()).toContain('ready');
    await publishExamples(nats.nc, cluster, 2 * WAVE, WAVE, PARTS);

    const total = 3 * WAVE;
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTS)) === 0, {
      timeoutMs: 60_000,
      message: 'every event acked',
    });
    await tap.flush();
    console.log(`[fault-shard-kill] events outstanding at the kill: ${inFlightAtKill}`);
    expect(ledger.examples()).toBe(total);
    for (let i = 0; i < SHARDS; i++) {
      const st = await shardStatus(nats.nc, cluster, i);
      expect(st.state).toBe('running');
      expect(st.version).toBe(ledger.acceptedBy(i));
    }
  });
});
