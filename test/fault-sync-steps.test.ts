import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createModel } from '@freshet/model';
import { decodePush, subjects } from '@freshet/protocol';
import { uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import {
  denseShard,
  faultModel,
  kill9,
  outstanding,
  prepareCluster,
  publishExamples,
  PushLedger,
  shardStatus,
  shortenAckWait,
  startRole,
  workerOptions,
  workerStatus,
  useRoleProcesses,
} from './fault-kit.js';

const STEP_TIMEOUT_MS = 1000;

/**
 * Load: 2 shard processes, 2 worker processes in `sync` steps (batch 32 each), 4 partitions,
 * 3,200 pre-labelled events published at once; worker `wa` is killed with SIGKILL once 800
 * examples were applied. Counted: the examples applied (distinct accepted push ids, their dense
 * counts) = 3,200 exactly; the pushes the dense shard summed into its steps = the distinct ids it
 * accepted (none applied twice, a re-push of a recovered batch included); and `wb` is held up by
 * the dead worker once, for about the step timeout, not for good.
 */
describe('fault: kill -9 of a worker in sync steps', () => {
  const nats = useNats();
  useRoleProcesses();
  const tempDir = useTempDirs();

  it('every example applied once; the other worker waits one step timeout, then goes on alone', async () => {
    const cluster = uniqueName('fsync').replace(/[^A-Za-z0-9_-]/g, '');
    const SHARDS = 2;
    const PARTS = 4;
    const TOTAL = 3200;
    const dir = tempDir('fault-sync');
    const model = { ...faultModel, staleness: { policy: 'sync' as const } };
    const spec = createModel(model).spec;
    const dense = denseShard(SHARDS);
    await prepareCluster(nats.nc, cluster, PARTS);
    const tap = await nats.connect('ledger');
    const ledger = PushLedger.start(tap, cluster);
    // when each of wb's pushes reached the dense shard: the gaps show how long a step held it
    const wbPushes: number[] = [];
    tap.subscribe(subjects(cluster).push(dense), {
      callback: (err, m) => {
        if (!err && decodePush(m.data).worker === 'wb') wbPushes.push(performance.now());
      },
    });
    await tap.flush();
    await Promise.all(
      [0, 1].map((i) =>
        startRole('shard', {
          cluster,
          shard: i,
          shards: SHARDS,
          nats: { servers: nats.url },
          model: spec,
          dataDir: join(dir, `shard-${i}`),
          limits: { syncStepTimeoutMs: STEP_TIMEOUT_MS },
        }),
      ),
    );
    const extra = { model, batch: { size: 32, maxWaitMs: 20 } };
    const wa = await startRole('worker', workerOptions(cluster, 'wa', SHARDS, PARTS, nats.url, extra));
    const wb = await startRole('worker', workerOptions(cluster, 'wb', SHARDS, PARTS, nats.url, extra));
    await waitFor(
      async () => ((await workerStatus(nats.nc, cluster, 'wb')).partitions as number[]).length > 0,
      { message: 'wb leases its share of the partitions' },
    );
    await shortenAckWait(nats.nc, cluster, PARTS, 3000);

    const published = publishExamples(nats.nc, cluster, 0, TOTAL, PARTS);
    await waitFor(() => ledger.examples() >= 800, { message: 'the first 800 examples applied' });
    const before = await shardStatus(nats.nc, cluster, dense);
    expect(before.sync?.members, 'both workers step together').toBe(2);
    const killedAt = performance.now();
    await kill9(wa);
    await published;

    await waitFor(
      async () => ((await workerStatus(nats.nc, cluster, 'wb')).partitions as number[]).length === PARTS,
      { message: 'wb owns every partition' },
    );
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTS)) === 0, {
      timeoutMs: 60_000,
      message: 'every event acked',
    });
    await tap.flush();
    expect(ledger.examples()).toBe(TOTAL);
    const st = await shardStatus(nats.nc, cluster, dense);
    console.log(
      `[fault-sync-steps] dense shard before the kill ${JSON.stringify(before.sync)}, after ${JSON.stringify(st.sync)}`,
    );
    const wbSt = (await workerStatus(nats.nc, cluster, 'wb')) as { counters: Record<string, number> };
    console.log(`[fault-sync-steps] wb counters ${JSON.stringify(wbSt.counters)}`);
    expect(st.sync?.pushes).toBe(ledger.acceptedBy(dense));
    expect(st.sync?.members).toBe(1);
    // the kill costs one timed-out step; the end of the stream (one worker runs dry first) may
    // cost another on the way
    expect(st.sync?.timeouts).toBeGreaterThanOrEqual(1);
    expect(st.sync?.timeouts).toBeLessThanOrEqual(3);
    // wb's pushes from its last one before the kill (its own partitions still have events): one
    // of its steps waits the step timeout for wa, the others do not wait for it at all. The step
    // that waits may be the one wb had already pushed into when wa died: its next push then
    // comes a step timeout after that last one.
    const lastBefore = wbPushes.filter((t) => t < killedAt).at(-1);
    const after = [
      ...(lastBefore !== undefined ? [lastBefore] : []),
      ...wbPushes.filter((t) => t >= killedAt),
    ].slice(0, 6);
    let gap = 0;
    for (let i = 1; i < after.length; i++) gap = Math.max(gap, after[i]! - after[i - 1]!);
    const span = after.at(-1)! - after[0]!;
    console.log(
      `[fault-sync-steps] wb's pushes around the kill: longest gap ${Math.round(gap)} ms, 6 in ${Math.round(span)} ms`,
    );
    expect(after.length).toBe(6);
    expect(gap).toBeGreaterThanOrEqual(STEP_TIMEOUT_MS * 0.9);
    expect(span).toBeLessThan(STEP_TIMEOUT_MS + 2500);
    expect(wb.handle.child.exitCode).toBeNull();
  });
});
