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
 * A worker with `halfPush` (or `int8Push`) against 2 shards over a real nats-server: its pushes
 * carry the embedding rows' gradients as binary16 with a scale exponent (or int8 with a scale per
 * row), the dense tensors as float32, and the model learns the pattern.
 */
const nats = useNats();
const workers: Worker[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(2000)));
});

const config = wideDeepTestModel({ kind: 'adam', lr: 0.02 });

/** Runs a worker with `opts` on the pattern; counts the push tables by how their gradients went. */
async function learnAndTap(tag: string, opts: { halfPush?: boolean; int8Push?: boolean }) {
  const spec = createModel(config).spec;
  const dense = new Set(spec.tables.map((t, i) => (t.kind === 'dense' ? i : -1)).filter((i) => i >= 0));
  const cluster = uniqueName(tag).replace(/[^A-Za-z0-9_-]/g, '');
  const s = subjects(cluster);
  const jsm = await nats.nc.jetstreamManager();
  await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(2) });
  await jsm.streams.add({ name: s.deadLetterStream, subjects: [s.deadLetter] });
  const harness = new ShardHarness(nats.nc, cluster, spec, 2);
  harness.startAll();
  // what goes on the wire, seen by a plain subscriber of the push subjects
  const kinds = { half: 0, halfScaled: 0, int8: 0, int8Narrow: 0, f32: 0, denseHalf: 0, denseInt8: 0 };
  const tap = nats.nc.subscribe(s.push(0).replace('.ps.0.push', '.ps.*.push'), {
    callback: (_e, m) => {
      const f = decodeFrame(m.data);
      const h = f.header as { tables: { t: number; dim: number; e?: number; q?: number }[] };
      h.tables.forEach((t, i) => {
        const grads = f.arrays[3 * i + 1];
        if (grads instanceof Uint16Array) {
          kinds.half++;
          if (t.e !== undefined) kinds.halfScaled++;
          if (dense.has(t.t)) kinds.denseHalf++;
        } else if (grads instanceof Int8Array && t.q === 8) {
          kinds.int8++;
          if (t.dim < 4) kinds.int8Narrow++;
          if (dense.has(t.t)) kinds.denseInt8++;
        } else kinds.f32++;
      });
    },
  });
  const w = new Worker(smallWorkerOptions(cluster, config, opts), {
    nc: await nats.connect(`worker-${tag}`),
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
  return { kinds, auc: w.status().progressive.auc };
}

describe('compact pushes from a worker', () => {
  it('sends sparse gradients as scaled binary16 and dense ones as float32, and learns', async () => {
    const { kinds, auc } = await learnAndTap('hp', { halfPush: true });
    expect(kinds.half).toBeGreaterThan(0);
    expect(kinds.halfScaled).toBe(kinds.half); // batch-mean gradients are far below 2^14
    expect(kinds.denseHalf).toBe(0);
    expect(kinds.int8).toBe(0);
    expect(kinds.f32).toBeGreaterThan(0); // the dense tensors
    expect(auc).toBeGreaterThan(0.6);
  });

  it("sends wide rows' gradients as int8 (stochastically rounded), narrow ones as binary16, dense as float32, and learns", async () => {
    const { kinds, auc } = await learnAndTap('i8p', { int8Push: true });
    expect(kinds.int8).toBeGreaterThan(0);
    expect(kinds.int8Narrow).toBe(0);
    expect(kinds.denseInt8).toBe(0);
    expect(kinds.half).toBeGreaterThan(0); // the model's 1-wide tables
    expect(kinds.denseHalf).toBe(0);
    expect(kinds.f32).toBeGreaterThan(0);
    expect(auc).toBeGreaterThan(0.6);
  });
});
