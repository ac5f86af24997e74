import { afterAll, describe, expect, it } from 'vitest';
import { createModel } from '@freshet/model';
import { decodeFrame, subjects } from '@freshet/protocol';
import { uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import {
  publishUserItemPattern,
  ShardHarness,
  wideDeepTestModel,
  smallWorkerOptions,
} from './shard-harness.js';

/**
 * A worker with `halfPush` against 2 shards over a real nats-server: its pushes carry the
 * embedding rows' gradients as binary16 with a scale exponent, the dense tensors as float32,
 * the shards apply every example once, and the model learns the pattern.
 */
const nats = useNats();
const workers: Worker[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(2000)));
});

const config = wideDeepTestModel({ kind: 'adam', lr: 0.02 });

describe('binary16 pushes from a worker', () => {
  it('sends sparse gradients as scaled binary16 and dense ones as float32, and learns', async () => {
    const spec = createModel(config).spec;
    const dense = new Set(spec.tables.map((t, i) => (t.kind === 'dense' ? i : -1)).filter((i) => i >= 0));
    const cluster = uniqueName('hp').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const jsm = await nats.nc.jetstreamManager();
    await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(2) });
    await jsm.streams.add({ name: s.deadLetterStream, subjects: [s.deadLetter] });
    const harness = new ShardHarness(nats.nc, cluster, spec, 2);
    harness.startAll();
    // what goes on the wire, seen by a plain subscriber of the push subjects
    const kinds = { half: 0, halfScaled: 0, f32: 0, denseHalf: 0 };
    const tap = nats.nc.subscribe(s.push(0).replace('.ps.0.push', '.ps.*.push'), {
      callback: (_e, m) => {
        const f = decodeFrame(m.data);
        const h = f.header as { tables: { t: number; e?: number }[] };
        h.tables.forEach((t, i) => {
          const grads = f.arrays[3 * i + 1];
          if (grads instanceof Uint16Array) {
            kinds.half++;
            if (t.e !== undefined) kinds.halfScaled++;
            if (dense.has(t.t)) kinds.denseHalf++;
          } else kinds.f32++;
        });
      },
    });
    const w = new Worker(smallWorkerOptions(cluster, config, { halfPush: true }), {
      nc: await nats.connect('worker-half-push'),
    });
    workers.push(w);
    await w.start();
    const N = 480;
    await publishUserItemPattern(nats.nc, cluster, N);
    await waitFor(() => w.status().examples >= N, {
      timeoutMs: 30_000,
      message: () => `learned ${w.status().examples}/${N}`,
    });
    tap.unsubscribe();
    expect(kinds.half).toBeGreaterThan(0);
    expect(kinds.halfScaled).toBe(kinds.half); // batch-mean gradients are far below 2^14
    expect(kinds.denseHalf).toBe(0);
    expect(kinds.f32).toBeGreaterThan(0); // the dense tensors
    expect(w.status().progressive.auc).toBeGreaterThan(0.6);
  });
});
