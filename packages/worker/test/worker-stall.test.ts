import { afterAll, describe, expect, it } from 'vitest';
import { createModel } from '@freshet/model';
import { encodeEvent, subjects } from '@freshet/protocol';
import { uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import { ShardHarness } from './shard-harness.js';

const nats = useNats();

const modelConfig = {
  kind: 'lr' as const,
  features: {
    fields: [
      { kind: 'categorical' as const, name: 'user' },
      { kind: 'categorical' as const, name: 'item' },
      { kind: 'numeric' as const, name: 'x' },
    ],
  },
  optimizer: { kind: 'adam' as const, lr: 0.05 },
};
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
    await jsm.streams.add({ name: s.feedbackStream, subjects: [s.feedbackAll] });
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
    const js = nats.nc.jetstream();
    const TOTAL = 6000;
    const BURST = 1000;
    let k = 0;
    for (let b = 0; b < TOTAL / BURST; b++) {
      const acks: Promise<unknown>[] = [];
      for (let i = 0; i < BURST; i++, k++) {
        const user = `u${k % 31}`;
        const ev = encodeEvent({
          v: 1,
          kind: 'example',
          id: `e${k}`,
          ts: Date.now(),
          user,
          label: k % 3 === 0 ? 1 : 0,
          features: { user, item: `i${k % 11}`, x: k % 7 },
        });
        acks.push(js.publish(s.feedback(k % PARTITIONS), ev));
      }
      await Promise.all(acks);
    }
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
    expect(harness.duplicates.reduce((a, b) => a + b, 0)).toBe(0);
    await w.stop();
  });
});
