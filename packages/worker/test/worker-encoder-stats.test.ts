import { afterAll, describe, expect, it } from 'vitest';
import { createModel } from '@freshet/model';
import { decodeEncoderStats, encoderStatsKey, subjects } from '@freshet/protocol';
import { publishExamples, uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import { ShardHarness } from './shard-harness.js';

/**
 * A worker publishes the running statistics of its standardised columns to KV, where serving
 * reads them. Load: 40 pre-labelled events with x = 0..39 on 2 partitions; checked: the record
 * holds what those values give (n 40, mean 19.5, m2 = Σ(x − 19.5)²).
 */
const nats = useNats();
const modelConfig = {
  kind: 'lr' as const,
  features: {
    fields: [
      { kind: 'categorical' as const, name: 'user' },
      { kind: 'numeric' as const, name: 'x', transform: 'standardise' as const },
    ],
  },
  optimizer: { kind: 'sgd' as const, lr: 0.01 },
};
const workers: Worker[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(500)));
});

describe('encoder statistics', () => {
  it('go to KV for serving while they change', async () => {
    const cluster = uniqueName('wst').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const jsm = await nats.nc.jetstreamManager();
    await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(2) });
    new ShardHarness(nats.nc, cluster, createModel(modelConfig).spec, 1).startAll();
    const w = new Worker(
      {
        cluster,
        id: 'w-stats',
        model: modelConfig,
        shards: 1,
        partitions: 2,
        batch: { size: 8, maxWaitMs: 20 },
        compute: { threads: 1 },
        encoderStatsMs: 100,
      },
      { nc: nats.nc },
    );
    workers.push(w);
    await w.start();
    const TOTAL = 40;
    await publishExamples(nats.nc, cluster, 0, TOTAL, 2, { features: (k, user) => ({ user, x: k }) });
    const kv = await nats.nc.jetstream().views.kv(s.kvBucket, { bindOnly: true });
    const record = await waitFor(
      async () => {
        const e = await kv.get(encoderStatsKey('w-stats'));
        if (!e || e.length === 0) return null;
        const r = decodeEncoderStats(e.value);
        return r.stats.x?.n === TOTAL ? r : null;
      },
      { message: 'the record covers every example' },
    );
    const mean = (TOTAL - 1) / 2;
    let m2 = 0;
    for (let k = 0; k < TOTAL; k++) m2 += (k - mean) ** 2;
    expect(record.worker).toBe('w-stats');
    expect(record.stats.x!.mean).toBeCloseTo(mean, 9);
    expect(record.stats.x!.m2).toBeCloseTo(m2, 6);
  });
});
