import { afterAll, describe, expect, it } from 'vitest';
import { createModel } from '@freshet/model';
import { encodeEvent, subjects } from '@freshet/protocol';
import { publishExamples, uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Worker, type WorkerStatus } from '../src/worker.js';
import { lrTestModel, ShardHarness } from './shard-harness.js';

const nats = useNats();

const modelConfig = lrTestModel;
const spec = createModel(modelConfig).spec;
const PARTITIONS = 8;
const STALL_MS = 250;

const workers: Worker[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(2000)));
});

describe('worker under bursts on many partitions', () => {
  it('learns every published event (no partition stalls with messages held unacked)', async () => {
    const cluster = uniqueName('ws').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const jsm = await nats.nc.jetstreamManager();
    await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(PARTITIONS) });
    const harness = new ShardHarness(nats.nc, cluster, spec, 2);
    harness.startAll();
    const w = new Worker(
      {
        cluster,
        model: modelConfig,
        shards: 2,
        partitions: PARTITIONS,
        batch: { size: 256, maxWaitMs: 50 },
        compute: { threads: 1 },
        lease: { heartbeatMs: 150, ttlMs: 1000 },
      },
      {
        nc: await nats.connect('worker-stall'),
        log: process.env.FRESHET_TEST_LOG ? (l, m, f) => console.error(l, m, JSON.stringify(f)) : undefined,
      },
    );
    workers.push(w);
    await w.start();
    await waitFor(() => w.partitions.length === PARTITIONS, { message: 'all partitions leased' });

    // A busy main thread (what a loaded 2-core machine and the batches' encoding do to the
    // worker): the event loop stalls for a while, repeatedly, so timers that fell due while it
    // stalled run before the socket is read.
    const stall = setInterval(() => {
      const t = Date.now();
      while (Date.now() - t < STALL_MS);
    }, 350);
    const TOTAL = 6000;
    await publishExamples(nats.nc, cluster, 0, TOTAL, PARTITIONS, {
      user: (k) => `u${k % 31}`,
      features: (k, user) => ({ user, item: `i${k % 11}`, x: k % 7 }),
    });
    const ackInfo = async () => {
      const out: string[] = [];
      for (let p = 0; p < PARTITIONS; p++) {
        const i = await jsm.consumers.info(s.feedbackStream, `freshet-worker-p${p}`);
        out.push(
          `p${p}: pending ${i.num_pending} ackPending ${i.num_ack_pending} redelivered ${i.num_redelivered}`,
        );
      }
      return out.join('; ');
    };
    const learned = await waitFor(() => harness.examplesApplied === TOTAL && w.counters.acked === TOTAL, {
      timeoutMs: 20_000,
    }).then(
      () => '',
      async () => {
        const st = w.status();
        return `applied ${harness.examplesApplied}/${TOTAL}, acked ${w.counters.acked}, buffered ${st.bufferedEvents}, in flight ${st.inFlightBatches}; ${await ackInfo()}`;
      },
    );
    clearInterval(stall);
    expect(learned).toBe('');
    expect(w.counters.acked).toBe(TOTAL);
    // a push is sent again only when its reply was lost or late (then the shard, which had
    // applied it, answers duplicate): never otherwise
    expect(harness.duplicates.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(w.counters.retries);
    await w.stop();
  });

  it('fetches again a partition lost and leased back while its old fetch loop was still stopping', async () => {
    const cluster = uniqueName('wl').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const jsm = await nats.nc.jetstreamManager();
    await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(PARTITIONS) });
    const harness = new ShardHarness(nats.nc, cluster, spec, 2);
    harness.startAll();
    let release!: () => void;
    harness.hold = new Promise<void>((r) => (release = r));
    const w = new Worker(
      {
        cluster,
        model: modelConfig,
        shards: 2,
        partitions: 1,
        batch: { size: 32, maxWaitMs: 20 },
        maxInFlightBatches: 1,
        maxBufferedEvents: 64,
        compute: { threads: 1 },
        lease: { heartbeatMs: 100, ttlMs: 5000 },
      },
      { nc: await nats.connect('worker-lease-back') },
    );
    workers.push(w);
    await w.start();
    const js = nats.nc.jetstream();
    const publish = async (from: number, n: number) => {
      const acks: Promise<unknown>[] = [];
      for (let k = from; k < from + n; k++) {
        const ev = encodeEvent({
          v: 1,
          kind: 'example',
          id: `l${k}`,
          ts: Date.now(),
          user: `u${k % 5}`,
          label: k % 2,
          features: { user: `u${k % 5}`, item: `i${k % 3}`, x: 1 },
        });
        acks.push(js.publish(s.labels(0), ev));
      }
      await Promise.all(acks);
    };
    await publish(0, 200);
    // Replies held: one batch in flight, the buffer full, so the fetch loop waits for room and
    // cannot end before the replies come.
    await waitFor(() => harness.applied.some((n) => n > 0) && w.status().bufferedEvents >= 32, {
      message: 'buffer full behind a held batch',
    });
    // the status endpoint reads lag from the consumer now (not the info cached at start)
    const reply = await nats.nc.request(`${s.prefix}.worker.${w.id}.status`, undefined, { timeout: 5000 });
    const st = JSON.parse(new TextDecoder().decode(reply.data)) as WorkerStatus;
    expect(st.lag?.['0']).toBeGreaterThan(0);
    const kv = await js.views.kv(s.kvBucket);
    const lease = (owner: string) =>
      new TextEncoder().encode(JSON.stringify({ owner, exp: Date.now() + 60_000 }));
    await kv.put('worker.lease.0', lease('another-worker'));
    await waitFor(() => !w.partitions.includes(0), { message: 'lease lost' });
    // ours again (a renewal that failed while NATS was unsettled, then succeeded)
    await kv.put('worker.lease.0', lease(w.id));
    await waitFor(() => w.partitions.includes(0), { message: 'leased back' });
    release();
    harness.hold = undefined;
    await publish(200, 100);
    const learned = await waitFor(() => harness.examplesApplied === 300, { timeoutMs: 15_000 }).then(
      () => '',
      async () => {
        const i = await jsm.consumers.info(s.feedbackStream, 'freshet-worker-p0');
        return `applied ${harness.examplesApplied}/300; consumer pending ${i.num_pending}, ack pending ${i.num_ack_pending}`;
      },
    );
    expect(learned).toBe('');
    await waitFor(
      async () => (await jsm.consumers.info(s.feedbackStream, 'freshet-worker-p0')).num_ack_pending === 0,
      {
        message: 'every event acked',
      },
    );
    await w.stop();
  });
});
