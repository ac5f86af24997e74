import { afterAll, describe, expect, it } from 'vitest';
import { AckPolicy } from 'nats';
import { createModel } from '@freshet/model';
import { encodeEvent, subjects } from '@freshet/protocol';
import { publishExamples, uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import { lrTestModel, ShardHarness } from './shard-harness.js';

// Labelled examples come from the labels subjects only: the worker consumes feedback and labels
// of a partition through one consumer (`freshet.<c>.*.<p>`) and dead-letters an `example` that
// arrives on a feedback subject. A consumer made before the labels subjects existed is kept (its
// position matters more) and reported.

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

  it('keeps and reports a consumer made before the labels subjects', async () => {
    const cluster = uniqueName('wl').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const jsm = await nats.nc.jetstreamManager();
    await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(1) });
    await jsm.streams.add({ name: s.deadLetterStream, subjects: [s.deadLetter] });
    await jsm.consumers.add(s.feedbackStream, {
      durable_name: 'freshet-worker-p0',
      filter_subject: s.feedback(0),
      ack_policy: AckPolicy.Explicit,
    });
    const warnings: string[] = [];
    const w = new Worker(
      { cluster, model: lrTestModel, shards: 1, partitions: 1, compute: { threads: 1 } },
      {
        nc: await nats.connect('worker-labels-old'),
        log: (level, msg) => {
          if (level === 'warn') warnings.push(msg);
        },
      },
    );
    workers.push(w);
    await w.start();
    expect(warnings.some((m) => /filters feedback only/.test(m))).toBe(true);
    const ci = await jsm.consumers.info(s.feedbackStream, 'freshet-worker-p0');
    expect(ci.config.filter_subject).toBe(s.feedback(0));
    // and it still delivers its feedback subject (an example there is still refused)
    await nats.nc.jetstream().publish(
      s.feedback(0),
      encodeEvent({
        kind: 'example',
        id: 'old',
        ts: Date.now(),
        user: 'u',
        label: 1,
        features: { user: 'u' },
      }),
    );
    await waitFor(() => w.status().deadLetters.FORBIDDEN_KIND === 1, {
      message: 'the old consumer delivers',
    });
  });
});
