import { afterAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { createModel } from '@freshet/model';
import { subjects } from '@freshet/protocol';
import {
  consumerBacklog,
  outstanding,
  publishExamples,
  uniqueName,
  useNats,
  waitFor,
} from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import type { WorkerOptionsInput } from '../src/worker-options.js';
import { lrTestModel, ShardHarness } from './shard-harness.js';

const nats = useNats();

const modelConfig = lrTestModel;
const spec = createModel(modelConfig).spec;
const PARTITIONS = 4;

const workers: Worker[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(2000)));
});

async function setup(shards = 2) {
  const cluster = uniqueName('wk').replace(/[^A-Za-z0-9_-]/g, '');
  const s = subjects(cluster);
  const jsm = await nats.nc.jetstreamManager();
  await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(PARTITIONS) });
  const harness = new ShardHarness(nats.nc, cluster, spec, shards);
  harness.startAll();
  return { cluster, s, harness };
}

function options(cluster: string, extra: Partial<WorkerOptionsInput> = {}): WorkerOptionsInput {
  return {
    cluster,
    model: modelConfig,
    shards: 2,
    partitions: PARTITIONS,
    batch: { size: 32, maxWaitMs: 20 },
    compute: { threads: 1 },
    retry: { attempts: 1000, baseMs: 10, maxMs: 100 },
    lease: { heartbeatMs: 150, ttlMs: 1000 },
    consumer: { ackWaitMs: 20_000, nakDelayMs: 50 },
    ...extra,
  };
}

async function start(o: WorkerOptionsInput, nc?: NatsConnection): Promise<Worker> {
  const w = new Worker(o, {
    nc: nc ?? (await nats.connect('worker-test')),
    log: process.env.FRESHET_TEST_LOG ? (l, m, f) => console.error(l, m, JSON.stringify(f)) : undefined,
  });
  workers.push(w);
  await w.start();
  return w;
}

let eventSeq = 0;
/** Publishes `n` labelled examples, round-robin over the partitions; returns their ids. */
async function publish(cluster: string, n: number): Promise<void> {
  const from = eventSeq;
  eventSeq += n;
  await publishExamples(nats.nc, cluster, from, n, PARTITIONS, {
    user: (k) => `u${k % 17}`,
    label: (k) => ((k % 17) % 3 === 0 ? 1 : 0),
    features: (k, user) => ({ user, item: `i${k % 5}`, x: k % 7 }),
  });
}

describe('worker', () => {
  it('trains on published events and acks them only after every shard accepted the push', async () => {
    const { cluster, s, harness } = await setup();
    let release!: () => void;
    harness.hold = new Promise<void>((r) => (release = r));
    const w = await start(options(cluster));
    expect(w.state).toBe('running');
    expect(w.partitions).toEqual([0, 1, 2, 3]);
    await publish(cluster, 200);
    // pushes reach the shards, but the replies are held: nothing may be acked yet
    await waitFor(() => harness.applied.every((n) => n > 0), { message: 'pushes on both shards' });
    expect(w.counters.acked).toBe(0);
    const held = await consumerBacklog(nats.nc, cluster, PARTITIONS);
    expect(held.ackPending).toBeGreaterThan(0);
    release();
    harness.hold = undefined;
    await waitFor(() => w.counters.acked === 200, { message: () => `200 acked, got ${w.counters.acked}` });
    await waitFor(async () => (await consumerBacklog(nats.nc, cluster, PARTITIONS)).ackPending === 0, {
      message: 'no ack pending on the consumers',
    });
    expect(harness.examplesApplied).toBe(200);
    expect(w.progressive().examples).toBe(200);
    const st = w.status();
    expect(st.backend).toMatch(/wasm|tensorflow|cpu/);
    expect(st.counters.failedBatches).toBe(0);
    // the service API reports the worker with its metadata
    const found = await nats.nc.services.client().info(s.serviceName('worker'));
    const infos = [];
    for await (const i of found) infos.push(i);
    expect(infos.some((i) => i.metadata?.id === w.id && i.metadata?.role === 'worker')).toBe(true);
    await w.stop();
    expect(w.state).toBe('stopped');
  });

  it('retries while a shard is down and acks nothing until it is back; applies each event once', async () => {
    const { cluster, harness } = await setup();
    const w = await start(options(cluster));
    await harness.stop(1);
    await publish(cluster, 120);
    await waitFor(() => w.counters.retries > 3, { message: 'retries against the stopped shard' });
    // every batch touches both shards (lr model: keys spread over them), so nothing is acked
    expect(w.counters.acked).toBe(0);
    expect((await consumerBacklog(nats.nc, cluster, PARTITIONS)).ackPending).toBeGreaterThan(0);
    harness.start(1);
    await waitFor(() => w.counters.acked === 120, { message: () => `120 acked, got ${w.counters.acked}` });
    expect(harness.examplesApplied).toBe(120);
    expect(w.counters.naked).toBe(0);
    await w.stop();
  });

  it('hands partitions over when a worker leaves, without losing or double-applying events', async () => {
    const { cluster, harness } = await setup();
    const a = await start(options(cluster, { id: 'wa' }));
    expect(a.partitions.length).toBe(PARTITIONS);
    const b = await start(options(cluster, { id: 'wb' }));
    // rendezvous hashing gives b its share; a hands those over after its in-flight work
    await waitFor(() => b.partitions.length > 0 && a.partitions.length + b.partitions.length === PARTITIONS, {
      message: () => `split: a=${a.partitions.join(',')} b=${b.partitions.join(',')}`,
    });
    let total = 0;
    for (let i = 0; i < 5; i++) {
      await publish(cluster, 60);
      total += 60;
    }
    const stopping = a.stop();
    await publish(cluster, 100);
    total += 100;
    await stopping;
    await waitFor(() => b.partitions.length === PARTITIONS, {
      message: () => `b owns all, has ${b.partitions.join(',')}`,
    });
    await publish(cluster, 60);
    total += 60;
    await waitFor(() => harness.examplesApplied === total, {
      timeoutMs: 20_000,
      message: () => `applied ${harness.examplesApplied} of ${total}`,
    });
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTITIONS)) === 0, {
      message: 'all events acked',
    });
    // every event acked exactly once overall (events a handed back were acked by b)
    expect(a.counters.acked + b.counters.acked).toBe(total);
    expect(harness.examplesApplied).toBe(total);
    expect(harness.duplicates.reduce((x, y) => x + y, 0)).toBe(0);
    await b.stop();
  });
});
