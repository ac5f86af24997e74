import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import {
  kill9,
  outstanding,
  prepareCluster,
  publishExamples,
  PushLedger,
  shardOptions,
  shortenAckWait,
  startRole,
  workerOptions,
  workerStatus,
  useRoleProcesses,
} from './fault-kit.js';

/**
 * Load: 2 shard processes, 2 worker processes, 4 partitions, 2,400 pre-labelled events in 3
 * waves of 800; worker `wa` is killed with SIGKILL while the second wave is being trained.
 * Counted: examples applied = Σ over distinct accepted push ids of the batch's dense example
 * count = 2,400 exactly (an example re-batched under a new id after the crash would count
 * twice; a lost one would be missing), every event acked, and `wb` owns every partition.
 */
describe('fault: kill -9 of a worker', () => {
  const nats = useNats();
  useRoleProcesses();
  const tempDir = useTempDirs();

  it('its partitions move to the other worker; no event lost, none applied twice', async () => {
    const cluster = uniqueName('fwork').replace(/[^A-Za-z0-9_-]/g, '');
    const SHARDS = 2;
    const PARTS = 4;
    const WAVE = 800;
    const dir = tempDir('fault-worker');
    await prepareCluster(nats.nc, cluster, PARTS);
    const tap = await nats.connect('ledger');
    const ledger = PushLedger.start(tap, cluster);
    await tap.flush();
    await Promise.all(
      [0, 1].map((i) =>
        startRole('shard', shardOptions(cluster, i, SHARDS, nats.url, join(dir, `shard-${i}`))),
      ),
    );
    const wa = await startRole('worker', workerOptions(cluster, 'wa', SHARDS, PARTS, nats.url));
    const wb = await startRole('worker', workerOptions(cluster, 'wb', SHARDS, PARTS, nats.url));
    await waitFor(
      async () => ((await workerStatus(nats.nc, cluster, 'wb')).partitions as number[]).length > 0,
      { message: 'wb leases its share of the partitions' },
    );
    await shortenAckWait(nats.nc, cluster, PARTS, 3000);

    await publishExamples(nats.nc, cluster, 0, WAVE, PARTS);
    const second = publishExamples(nats.nc, cluster, WAVE, WAVE, PARTS);
    await waitFor(() => ledger.examples() > WAVE, { message: 'the second wave is being trained' });
    await kill9(wa);
    await second;
    await publishExamples(nats.nc, cluster, 2 * WAVE, WAVE, PARTS);

    const total = 3 * WAVE;
    await waitFor(
      async () => ((await workerStatus(nats.nc, cluster, 'wb')).partitions as number[]).length === PARTS,
      { message: 'wb owns every partition' },
    );
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTS)) === 0, {
      timeoutMs: 60_000,
      message: 'every event acked',
    });
    await tap.flush();
    if (ledger.examples() !== total) {
      // what the survivor recovered, to tell a lost batch from a miscount
      const lines = wb.handle.output().split('\n');
      console.log(
        `[fault-worker-kill] wb recovery log:\n${lines.filter((l) => /manifest/.test(l)).join('\n')}`,
      );
    }
    expect(ledger.examples()).toBe(total);
    const st = (await workerStatus(nats.nc, cluster, 'wb')) as { counters: Record<string, number> };
    console.log(
      `[fault-worker-kill] wb counters ${JSON.stringify(st.counters)}; re-pushes of part of a batch ${ledger.partialDuplicates}`,
    );
    expect(wb.handle.child.exitCode).toBeNull();
  });
});
