import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connectNats } from '@freshet/nats';
import { subjects } from '@freshet/protocol';
import { uniqueName, useNatsCluster, useTempDirs, waitFor } from '@freshet/testkit';
import {
  outstanding,
  prepareCluster,
  publishExamples,
  PushLedger,
  shardOptions,
  startRole,
  workerOptions,
  useRoleProcesses,
  workerStatus,
} from './fault-kit.js';

/**
 * Load: a 3-node NATS cluster with the feedback stream replicated 3 ways, 2 shard processes,
 * 2 worker processes (every process knows all three URLs), 4 partitions, 1,800 pre-labelled
 * events in 3 waves of 600. The NATS node that leads the KV bucket is stopped after the first
 * wave, the second wave is published and learning goes on without it (at least half the wave
 * applied while it is down), then it is restarted and the third wave follows.
 * Counted: examples applied (Σ of dense counts over distinct accepted push ids, tapped on a
 * node that stays up) ≥ 1,800 (nothing lost), the excess (applied twice) reported and bounded,
 * and every event acked.
 */
describe('fault: one of three NATS servers stopped and restarted under load', () => {
  const nats = useNatsCluster(3);
  useRoleProcesses();
  const tempDir = useTempDirs();

  it('loses nothing and keeps learning', async () => {
    const cluster = uniqueName('fnats').replace(/[^A-Za-z0-9_-]/g, '');
    const SHARDS = 2;
    const PARTS = 4;
    const WAVE = 600;
    const urls = nats.cluster.urls;
    const dir = tempDir('fault-nats');
    const prep = await connectNats({ servers: urls }, 'fault-prepare');
    let victimAt: number;
    try {
      let lastError = '';
      await waitFor(
        async () => {
          try {
            await prepareCluster(prep, cluster, PARTS, 3);
            return true;
          } catch (e) {
            lastError = String(e); // JetStream meta leader not elected yet
            return false;
          }
        },
        { timeoutMs: 60_000, intervalMs: 250, message: () => `replicated stream created (${lastError})` },
      );
      // The node that leads the KV bucket (leases, manifests) goes down: the hardest case, and
      // the one that stalled every worker while the bucket was R1.
      const kv = await (await prep.jetstreamManager()).streams.info(`KV_${subjects(cluster).kvBucket}`);
      expect(kv.config.num_replicas).toBe(3);
      victimAt = nats.cluster.servers.findIndex((s) => s.name === kv.cluster?.leader);
      expect(victimAt).toBeGreaterThanOrEqual(0);
    } finally {
      await prep.close();
    }
    const victim = nats.cluster.servers[victimAt]!;
    // admin and tap on a node that stays up; roles on all three URLs
    const home = urls[(victimAt + 1) % urls.length]!;
    const nc = await connectNats({ servers: home }, 'fault-admin');
    const tap = await connectNats({ servers: home }, 'fault-ledger');
    try {
      const ledger = PushLedger.start(tap, cluster);
      await tap.flush();
      await Promise.all(
        [0, 1].map((i) =>
          startRole('shard', shardOptions(cluster, i, SHARDS, urls, join(dir, `shard-${i}`))),
        ),
      );
      // Messages the lost server had delivered but the workers never received come back after
      // the consumers' ack wait (30 s by default): within this test's deadlines.
      await Promise.all(
        ['wa', 'wb'].map((id) => startRole('worker', workerOptions(cluster, id, SHARDS, PARTS, urls))),
      );

      await publishExamples(nc, cluster, 0, WAVE, PARTS);
      await waitFor(() => ledger.examples() > 0, { message: 'learning started' });
      // SIGTERM without the handle's cleanup: its store and config stay for the restart
      victim.kill('SIGTERM');
      await waitFor(() => !victim.running, { message: 'nats node down' });
      await publishExamples(nc, cluster, WAVE, WAVE, PARTS);
      // Progress, not completion, while the node is down: a batch whose pull request the lost
      // server never answered comes back only after the ack wait; the count below (after the
      // restart) is what shows nothing was lost.
      await waitFor(() => ledger.examples() >= WAVE + WAVE / 2, {
        timeoutMs: 45_000,
        message: () => `learning continues with a node down: ${ledger.examples()} applied`,
      });
      await victim.restart();
      await publishExamples(nc, cluster, 2 * WAVE, WAVE, PARTS);

      const total = 3 * WAVE;
      await waitFor(async () => (await outstanding(nc, cluster, PARTS)) === 0, {
        timeoutMs: 60_000,
        message: 'every event acked',
      });
      await tap.flush();
      for (const id of ['wa', 'wb']) {
        const st = (await workerStatus(nc, cluster, id)) as { counters: Record<string, number> };
        console.log(`[fault-nats-node] ${id} counters ${JSON.stringify(st.counters)}`);
      }
      // Nothing lost. Applied twice: only events whose ack the lost server's consumer leader had
      // answered but not yet replicated (JetStream answers an ack before its commit), redelivered
      // to a worker that no longer remembers them: at most what was delivered and unacked at
      // that moment, ≤ 2 batches per partition here. Counted and reported, not hidden.
      const applied = ledger.examples();
      console.log(`[fault-nats-node] applied ${applied} of ${total} published`);
      expect(applied).toBeGreaterThanOrEqual(total);
      expect(applied - total).toBeLessThanOrEqual(PARTS * 2 * 64);
    } finally {
      await tap.close();
      await nc.close();
    }
  }, 180_000);
});
