import { afterAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { createModel } from '@freshet/model';
import { frameEndpoint } from '@freshet/nats';
import { decodePull, encodePullReply, shardOfDense, subjects } from '@freshet/protocol';
import { outstanding, publishExamples, setAckWait, uniqueName, useNats, waitFor } from '@freshet/testkit';
import { encodeManifest, manifestKey } from '../src/batch-manifest.js';
import { Worker } from '../src/worker.js';
import type { WorkerOptionsInput } from '../src/worker-options.js';
import { ShardHarness } from './shard-harness.js';

/**
 * The crash window between a shard's accept and the acks. Worker A has every batch accepted by
 * the shard that owns the dense table while the other shard is down, then its connection is cut
 * (its process, as far as NATS can tell, is gone). Worker B takes the partitions over with a
 * different batch size, so the redelivered events would form different batches (different push
 * ids). Load: 4 partitions × 12 pre-labelled events. Counted: examples applied through the dense
 * table (each batch's dense push carries its example count), and acks on the consumers.
 */
const nats = useNats();
const modelConfig = {
  kind: 'lr' as const,
  features: {
    fields: [
      { kind: 'categorical' as const, name: 'user' },
      { kind: 'categorical' as const, name: 'item' },
    ],
  },
  optimizer: { kind: 'sgd' as const, lr: 0.01 },
};
const spec = createModel(modelConfig).spec;
const PARTITIONS = 4;
const PER_PARTITION = 12;
const denseTable = spec.tables.findIndex((t) => t.kind === 'dense');

const workers: Worker[] = [];
const conns: NatsConnection[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(500)));
  await Promise.allSettled(conns.map((c) => c.close()));
});

async function run(manifests: boolean, batchA = PER_PARTITION) {
  const cluster = uniqueName('mf').replace(/[^A-Za-z0-9_-]/g, '');
  const s = subjects(cluster);
  const jsm = await nats.nc.jetstreamManager();
  await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(PARTITIONS) });
  const harness = new ShardHarness(nats.nc, cluster, spec, 2);
  harness.startAll();
  const denseShard = shardOfDense(spec.tables[denseTable]!, 2);
  const other = 1 - denseShard;

  const options = (id: string, batch: number): WorkerOptionsInput => ({
    cluster,
    id,
    model: modelConfig,
    shards: 2,
    partitions: PARTITIONS,
    // A's batches hold one partition each unless a test asks for more than a partition holds
    // (a batch formed across partitions under load is recovered once per partition)
    batch: { size: batch, maxWaitMs: 30, crossPartition: batch > PER_PARTITION },
    maxInFlightBatches: 16,
    compute: { threads: 1 },
    retry: { attempts: 1000, baseMs: 10, maxMs: 100 },
    lease: { heartbeatMs: 150, ttlMs: 1000 },
    consumer: { nakDelayMs: 50 },
    manifest: { enabled: manifests },
  });
  const start = async (o: WorkerOptionsInput) => {
    const nc = await nats.connect('manifest-test');
    conns.push(nc);
    const w = new Worker(o, {
      nc,
      log: process.env.FRESHET_TEST_LOG ? (l, m, f) => console.error(l, m, JSON.stringify(f)) : undefined,
    });
    workers.push(w);
    await w.start();
    return { w, nc };
  };

  const a = await start(options('wa', batchA));
  // The other shard answers pulls but not pushes: batches are computed, the dense shard accepts
  // them, and the push to the other shard retries.
  await harness.stop(other);
  const core = harness.cores[other]!;
  const pullOnly = frameEndpoint(nats.nc, s.pull(other), (d) => encodePullReply(core.pull(decodePull(d))));
  const total = PARTITIONS * PER_PARTITION;
  await publishExamples(nats.nc, cluster, 0, total, PARTITIONS);
  // Every event is in a batch the dense shard has applied; the other shard is down, so none acked.
  await waitFor(() => harness.denseExamples[denseShard] === total && a.w.counters.retries > 0, {
    message: () => `dense shard applied ${harness.denseExamples[denseShard]} of ${total}`,
  });
  expect(a.w.counters.acked).toBe(0);
  if (manifests) expect(a.w.counters.manifestPuts).toBeGreaterThanOrEqual(PARTITIONS);
  // "kill -9": the connection goes, so no ack, no lease renewal, no manifest delete
  await a.nc.close();
  await pullOnly.drain();
  harness.start(other);

  const b = await start(options('wb', 5));
  await waitFor(() => b.w.partitions.length === PARTITIONS, { message: 'b leases every partition' });
  // The dead worker's events would come back after the consumers' ack wait (≥ 15 s as workers
  // size it); shorten it so they come back in seconds.
  await setAckWait(nats.nc, cluster, PARTITIONS, 2000);
  await waitFor(async () => (await outstanding(nats.nc, cluster, PARTITIONS)) === 0, {
    timeoutMs: 30_000,
    message: () => `every event acked: ${JSON.stringify(b.w.counters)}`,
  });
  return { harness, denseShard, total, a: a.w, b: b.w };
}

describe('batch manifests', () => {
  it('a worker killed between a shard accept and the acks: its successor applies nothing twice', async () => {
    const { harness, denseShard, total, b } = await run(true);
    // each example applied exactly once: the dense shard answered the re-pushes as duplicates
    expect(harness.denseExamples[denseShard]).toBe(total);
    expect(harness.duplicates[denseShard]).toBeGreaterThanOrEqual(PARTITIONS);
    expect(b.counters.recoveredBatches).toBeGreaterThanOrEqual(PARTITIONS);
    expect(b.counters.recoveredExamples).toBe(total);
    expect(b.counters.appliedRedeliveries).toBe(total);
    // the other shard applied each recovered batch once as well
    expect(harness.applied[1 - denseShard]).toBe(b.counters.recoveredBatches);
  });

  it('batches across partitions: the manifest under each partition; recovered whole, applied once', async () => {
    // A's batches (16) are larger than any partition's events (12): every batch mixes partitions.
    const { harness, denseShard, total, a, b } = await run(true, 16);
    expect(a.counters.crossPartitionBatches).toBeGreaterThan(0);
    expect(a.counters.manifestPuts).toBeGreaterThan(harness.applied[denseShard]!); // more copies than batches
    expect(harness.denseExamples[denseShard]).toBe(total);
    // each copy of a mixed batch is recovered (so examples more than once), all but the first
    // re-push of each answered `duplicate` by both shards
    expect(b.counters.recoveredExamples).toBeGreaterThan(total);
    expect(b.counters.appliedRedeliveries).toBe(total);
    expect(harness.applied[1 - denseShard]).toBeLessThan(b.counters.recoveredBatches);
  });

  it('a mixed batch whose worker died while storing its copies: the stored part recovered, each example once', async () => {
    const cluster = uniqueName('mfp').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const jsm = await nats.nc.jetstreamManager();
    await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(PARTITIONS) });
    const kv = await nats.nc.jetstream().views.kv(s.kvBucket);
    const harness = new ShardHarness(nats.nc, cluster, spec, 2);
    harness.startAll();
    const denseShard = shardOfDense(spec.tables[denseTable]!, 2);
    const total = PARTITIONS * PER_PARTITION;
    await publishExamples(nats.nc, cluster, 0, total, PARTITIONS);
    const seqs: number[][] = [[], []];
    for (let seq = 1; seq <= total; seq++) {
      const m = await jsm.streams.getMessage(s.feedbackStream, { seq });
      const q = Number(m.subject.split('.').at(-1));
      if (q === 0 || q === 1) seqs[q]!.push(seq);
    }
    expect(seqs.map((x) => x.length)).toEqual([PER_PARTITION, PER_PARTITION]);
    // a batch of partitions 0 and 1 whose worker died after storing the copy of partition 0 and
    // before the copy of partition 1 (so before its push): partition 1's owner will find nothing
    await kv.put(
      manifestKey(0, 0),
      encodeManifest({
        v: 1,
        id: 'diedwhilestoring',
        partition: 0,
        partitions: [0, 1],
        worker: 'dead',
        ex: [0, 1].flatMap((q) => seqs[q]!.slice(0, 6).map((seq) => ({ s: [seq], p: q }))),
      }),
    );
    const nc = await nats.connect('manifest-partial');
    conns.push(nc);
    const w = new Worker(
      {
        cluster,
        id: 'wb',
        model: modelConfig,
        shards: 2,
        partitions: PARTITIONS,
        batch: { size: 5, maxWaitMs: 30 },
        compute: { threads: 1 },
        lease: { heartbeatMs: 150, ttlMs: 1000 },
      },
      {
        nc,
        log: process.env.FRESHET_TEST_LOG ? (l, m, f) => console.error(l, m, JSON.stringify(f)) : undefined,
      },
    );
    workers.push(w);
    await w.start();
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTITIONS)) === 0, {
      timeoutMs: 30_000,
      message: () => `every event acked: ${JSON.stringify(w.counters)}`,
    });
    await waitFor(() => harness.denseExamples[denseShard]! >= total, { message: 'every example applied' });
    // partition 0's part under the batch's id, partition 1's events trained as they came
    expect(w.counters.recoveredExamples).toBe(6);
    expect(harness.denseExamples[denseShard]).toBe(total);
  });

  it('control: without manifests the same crash applies the examples twice', async () => {
    const { harness, denseShard, total } = await run(false);
    expect(harness.denseExamples[denseShard]).toBe(2 * total);
  });
});
