import { afterAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { createModel } from '@freshet/model';
import { connectNats } from '@freshet/nats';
import { shardOfDense, subjects } from '@freshet/protocol';
import {
  outstanding,
  publishExamples,
  setAckWait,
  startLossyLink,
  uniqueName,
  useNats,
  waitFor,
  type LossyLink,
} from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import { ShardHarness, lrTestModel } from './shard-harness.js';

/**
 * Acks lost on the way to the consumer (a server dying with them in flight, a consumer leader
 * being re-elected). The worker talks to a real nats-server through a link that drops the
 * `$JS.ACK` publishes of half the events for longer than the consumer's ack wait, then heals.
 * Load: 2 partitions × 24 pre-labelled events. Counted: examples applied through the dense
 * table (each batch's dense push carries its example count), and the consumers' outstanding
 * events once the link healed.
 */
const nats = useNats();
const spec = createModel(lrTestModel).spec;
const denseTable = spec.tables.findIndex((t) => t.kind === 'dense');
const PARTITIONS = 2;
const PER_PARTITION = 24;
const ACK_WAIT_MS = 1500;

const workers: Worker[] = [];
const conns: NatsConnection[] = [];
const links: LossyLink[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(500)));
  await Promise.allSettled(conns.map((c) => c.close()));
  await Promise.allSettled(links.map((l) => l.close()));
});

async function run(confirmAcks: boolean) {
  const cluster = uniqueName('acks').replace(/[^A-Za-z0-9_-]/g, '');
  const s = subjects(cluster);
  const jsm = await nats.nc.jetstreamManager();
  await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(PARTITIONS) });
  const harness = new ShardHarness(nats.nc, cluster, spec, 2);
  harness.startAll();
  const dense = shardOfDense(spec.tables[denseTable]!, 2);

  const link = await startLossyLink(nats.server.url);
  links.push(link);
  const nc = await connectNats({ servers: link.url }, 'acks-test');
  conns.push(nc);
  const w = new Worker(
    {
      cluster,
      id: `w-${confirmAcks ? 'confirm' : 'plain'}`,
      model: lrTestModel,
      shards: 2,
      partitions: PARTITIONS,
      batch: { size: 8, maxWaitMs: 20 },
      compute: { threads: 1 },
      requestTimeoutMs: 300,
      retry: { attempts: 1000, baseMs: 10, maxMs: 100 },
      lease: { heartbeatMs: 150, ttlMs: 1000 },
      consumer: { nakDelayMs: 50, confirmAcks },
    },
    { nc },
  );
  workers.push(w);
  await w.start();
  // the worker sizes the ack wait for its joiner (≥ 15 s): shorten it so redeliveries come in seconds
  await setAckWait(nats.nc, cluster, PARTITIONS, ACK_WAIT_MS);

  link.drop((subject) => subject.startsWith('$JS.ACK.') && Number(subject.split('.')[6]) % 2 === 1);
  const total = PARTITIONS * PER_PARTITION;
  await publishExamples(nats.nc, cluster, 0, total, PARTITIONS);
  await waitFor(() => harness.denseExamples[dense]! >= total, {
    message: () => `applied ${harness.denseExamples[dense]} of ${total}`,
  });
  // every ack sent so far is lost; the events come back after the ack wait, some more than once
  await new Promise((r) => setTimeout(r, ACK_WAIT_MS * 2.5));
  const droppedWhileLossy = link.dropped;
  // confirmed acks wait while theirs are lost (plain ones are gone at once)
  if (confirmAcks) expect(w.status().acksConfirming).toBeGreaterThan(0);
  link.heal();
  await waitFor(async () => (await outstanding(nats.nc, cluster, PARTITIONS)) === 0, {
    timeoutMs: 30_000,
    message: () => `every event acked: ${JSON.stringify(w.counters)}`,
  });
  await waitFor(() => w.status().acksConfirming === 0, { message: 'every confirmation in' });
  return { applied: harness.denseExamples[dense]!, total, droppedWhileLossy, w };
}

describe('acks lost on the way to the consumer', () => {
  it('are sent again until confirmed; redelivered events are acked, never trained twice', async () => {
    const { applied, total, droppedWhileLossy, w } = await run(true);
    expect(droppedWhileLossy).toBeGreaterThanOrEqual(total / 2);
    expect(applied).toBe(total);
    expect(w.counters.ackRetries).toBeGreaterThan(0);
    expect(w.counters.appliedRedeliveries).toBeGreaterThan(0);
    expect(w.counters.acksUnconfirmed).toBe(0);
  });

  it('control: with plain acks the same loss trains the events again', async () => {
    const { applied, total, droppedWhileLossy } = await run(false);
    expect(droppedWhileLossy).toBeGreaterThanOrEqual(total / 2);
    expect(applied).toBeGreaterThan(total);
  });
});
