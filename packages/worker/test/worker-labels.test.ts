import { afterAll, describe, expect, it } from 'vitest';
import { AckPolicy } from 'nats';
import { createModel } from '@freshet/model';
import { encodeEvent, subjects } from '@freshet/protocol';
import { publishExamples, uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import { lrTestModel, ShardHarness } from './shard-harness.js';

// Labelled examples come from the labels subjects only: the worker consumes feedback and labels
// of a partition through one consumer (`freshet.<c>.*.<p>`) and dead-letters an `example` that
// arrives on a feedback subject. A consumer made before the labels subjects existed is recreated
// with the new filter at its acknowledged position when it is quiet, else kept and reported.

const nats = useNats();
const spec = createModel(lrTestModel).spec;
const PARTITIONS = 2;
const workers: Worker[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(2000)));
});

describe('worker and the labels subjects', () => {
  it('trains labels, dead-letters examples on feedback subjects', async () => {
    const cluster = uniqueName('wl').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const jsm = await nats.nc.jetstreamManager();
    await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(PARTITIONS) });
    await jsm.streams.add({ name: s.deadLetterStream, subjects: [s.deadLetter] });
    const harness = new ShardHarness(nats.nc, cluster, spec, 1);
    harness.startAll();
    const w = new Worker(
      {
        cluster,
        model: lrTestModel,
        shards: 1,
        partitions: PARTITIONS,
        batch: { size: 16, maxWaitMs: 20 },
        compute: { threads: 1 },
        lease: { heartbeatMs: 150, ttlMs: 1000 },
      },
      { nc: await nats.connect('worker-labels') },
    );
    workers.push(w);
    await w.start();
    for (const p of [0, 1]) {
      const ci = await jsm.consumers.info(s.feedbackStream, `freshet-worker-p${p}`);
      expect(ci.config.filter_subject).toBe(s.partitionFilter(p));
    }
    const N = 40;
    await publishExamples(nats.nc, cluster, 0, N, PARTITIONS); // onto the labels subjects
    // a plain publisher's example on a feedback subject
    const forged = encodeEvent({
      kind: 'example',
      id: 'forged',
      ts: Date.now(),
      user: 'mallory',
      label: 1,
      features: { user: 'mallory' },
    });
    await nats.nc.jetstream().publish(s.feedback(0), forged);
    await nats.nc.jetstream().publish(s.feedback(1), forged, { msgID: 'forged-1' });
    await waitFor(() => harness.examplesApplied === N && w.status().deadLetters.FORBIDDEN_KIND === 2, {
      message: () =>
        `${N} applied (got ${harness.examplesApplied}), 2 FORBIDDEN_KIND (got ${w.status().deadLetters.FORBIDDEN_KIND}); partitions ${w.partitions.join(',')}`,
    });
    await waitFor(() => w.counters.acked === N + 2, { message: () => `all acked (${w.counters.acked})` });
    expect(harness.examplesApplied).toBe(N);
  });

  it('recreates a quiet consumer made before the labels subjects with the new filter, at its position', async () => {
    const cluster = uniqueName('wl').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const jsm = await nats.nc.jetstreamManager();
    const js = nats.nc.jetstream();
    await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(1) });
    await jsm.streams.add({ name: s.deadLetterStream, subjects: [s.deadLetter] });
    // an older version's consumer (feedback only) that consumed and acked 5 events
    await jsm.consumers.add(s.feedbackStream, {
      durable_name: 'freshet-worker-p0',
      filter_subject: s.feedback(0),
      ack_policy: AckPolicy.Explicit,
    });
    const forged = (id: string) =>
      encodeEvent({ kind: 'example', id, ts: Date.now(), user: 'u', label: 1, features: { user: 'u' } });
    for (let k = 0; k < 5; k++) await js.publish(s.feedback(0), forged(`acked-${k}`));
    const old = await js.consumers.get(s.feedbackStream, 'freshet-worker-p0');
    let got = 0;
    for await (const m of await old.fetch({ max_messages: 5, expires: 2000 })) {
      m.ack();
      got++;
    }
    expect(got).toBe(5);
    await waitFor(
      async () => (await jsm.consumers.info(s.feedbackStream, 'freshet-worker-p0')).num_ack_pending === 0,
      {
        message: 'old acks in',
      },
    );
    // labels published while the old consumer still filters feedback only
    const N = 30;
    await publishExamples(nats.nc, cluster, 0, N, 1);

    const harness = new ShardHarness(nats.nc, cluster, spec, 1);
    harness.startAll();
    const infos: string[] = [];
    const w = new Worker(
      {
        cluster,
        model: lrTestModel,
        shards: 1,
        partitions: 1,
        batch: { size: 16, maxWaitMs: 20 },
        compute: { threads: 1 },
      },
      {
        nc: await nats.connect('worker-labels-old'),
        log: (_level, msg) => {
          infos.push(msg);
        },
      },
    );
    workers.push(w);
    await w.start();
    expect(infos.some((m) => /recreated with the partition filter/.test(m))).toBe(true);
    const ci = await jsm.consumers.info(s.feedbackStream, 'freshet-worker-p0');
    expect(ci.config.filter_subject).toBe(s.partitionFilter(0));
    // the labels are consumed and trained; the feedback it had acked is not delivered again
    // (those forged examples would be dead-lettered FORBIDDEN_KIND); new feedback still comes
    await js.publish(s.feedback(0), forged('after'));
    await waitFor(() => harness.examplesApplied === N && w.status().deadLetters.FORBIDDEN_KIND === 1, {
      message: () =>
        `${N} applied (got ${harness.examplesApplied}), FORBIDDEN_KIND 1 (got ${w.status().deadLetters.FORBIDDEN_KIND})`,
    });
    await waitFor(() => w.counters.acked === N + 1, { message: () => `all acked (${w.counters.acked})` });
    await new Promise((r) => setTimeout(r, 300));
    expect(w.status().deadLetters.FORBIDDEN_KIND).toBe(1);
    expect(harness.examplesApplied).toBe(N);
  });

  it('keeps and reports an old consumer that is not quiet (acks pending)', async () => {
    const cluster = uniqueName('wl').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const jsm = await nats.nc.jetstreamManager();
    const js = nats.nc.jetstream();
    await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(1) });
    await jsm.streams.add({ name: s.deadLetterStream, subjects: [s.deadLetter] });
    await jsm.consumers.add(s.feedbackStream, {
      durable_name: 'freshet-worker-p0',
      filter_subject: s.feedback(0),
      ack_policy: AckPolicy.Explicit,
      ack_wait: 60_000_000_000,
    });
    const ev = encodeEvent({
      kind: 'example',
      id: 'held',
      ts: Date.now(),
      user: 'u',
      label: 1,
      features: { user: 'u' },
    });
    await js.publish(s.feedback(0), ev);
    // delivered, never acked: an older worker's impression waiting for its click
    const old = await js.consumers.get(s.feedbackStream, 'freshet-worker-p0');
    for await (const m of await old.fetch({ max_messages: 1, expires: 2000 })) void m;
    const warnings: string[] = [];
    const w = new Worker(
      { cluster, model: lrTestModel, shards: 1, partitions: 1, compute: { threads: 1 } },
      {
        nc: await nats.connect('worker-labels-busy'),
        log: (level, msg) => {
          if (level === 'warn') warnings.push(msg);
        },
      },
    );
    workers.push(w);
    await w.start();
    expect(warnings.some((m) => /older filter and is busy/.test(m))).toBe(true);
    const ci = await jsm.consumers.info(s.feedbackStream, 'freshet-worker-p0');
    expect(ci.config.filter_subject).toBe(s.feedback(0));
    expect(ci.num_ack_pending).toBe(1);
  });
});
