import { describe, expect, it } from 'vitest';
import { SyntheticWorld } from '@freshet/client';
import type { ModelConfigInput } from '@freshet/model';
import { trainOnline } from '../src/online-trainer.js';
import { lrSparseVectors, sequentialFtrl } from '../src/sequential-ftrl.js';

/**
 * The shard's FTRL on summed-loss gradients, at batch 1, is per-example FTRL-Proximal: the
 * trainer (encoder, compute threads, shard) and a float64 implementation written from the paper
 * must score every example alike. This pins both: the reference the ftrl bench measures against,
 * and the shard's FTRL on sparse (wide) and dense (numeric weights, bias) tables. The `lr`
 * model's default, sequential FTRL (workers train per example on pulled z, n and push what they
 * added), must equal the reference at any batch size.
 */
const ftrl = { kind: 'ftrl' as const, alpha: 0.1, beta: 1, l1: 0.5, l2: 1 };
const summed: ModelConfigInput = {
  kind: 'lr',
  features: {
    fields: [
      ...['user', 'item', 'category'].map((name) => ({ kind: 'categorical' as const, name })),
      { kind: 'numeric' as const, name: 'position', transform: 'standardise' as const },
    ],
  },
  optimizer: { ...ftrl, sequential: false },
};
const model: ModelConfigInput = { ...summed, optimizer: ftrl };
const examples = [
  ...new SyntheticWorld({ seed: 5, users: 30, items: 20, requests: 400, slate: 5 }).labelled(),
];
const labels = examples.map((e) => e.label);
const constant = { plateau: { enabled: false }, drift: { enabled: false } };
/** The largest difference between two runs' predictions, example by example. */
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < examples.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

describe('sequential FTRL reference', () => {
  it('equals the trainer with the shard FTRL at batch 1, example for example', async () => {
    const { vectors, coordinates } = lrSparseVectors(model, examples, 1);
    const seq = sequentialFtrl(vectors, labels, coordinates, ftrl);
    const run = await trainOnline({ model: summed, examples, batch: 1, threads: 1, lr: constant });
    expect(maxDiff(seq, run.preds)).toBeLessThan(1e-5);
    // and it learned: the late predictions are far from the cold 0.5
    const late = Array.from(seq.slice(-200), (p) => Math.abs(p - 0.5));
    expect(Math.max(...late)).toBeGreaterThan(0.1);
  }, 60_000);

  it('equals sequential FTRL at batch 64 (workers train per example, push z and n deltas)', async () => {
    const { vectors, coordinates } = lrSparseVectors(model, examples, 64);
    const seq = sequentialFtrl(vectors, labels, coordinates, ftrl);
    const opts = { examples, batch: 64, threads: 1, lr: constant };
    const run = await trainOnline({ ...opts, model });
    expect(maxDiff(seq, run.preds)).toBeLessThan(1e-4);
    // the summed gradient of 64 examples applied once scores differently: the test can fail
    const batched = await trainOnline({ ...opts, model: summed });
    expect(maxDiff(seq, batched.preds)).toBeGreaterThan(1e-2);
  }, 60_000);

  it('differs from the trainer when the hyper-parameters differ (the comparison can fail)', async () => {
    const { vectors, coordinates } = lrSparseVectors(model, examples, 1);
    const seq = sequentialFtrl(vectors, labels, coordinates, { ...ftrl, alpha: 0.2 });
    const run = await trainOnline({ model: summed, examples, batch: 1, threads: 1, lr: constant });
    expect(maxDiff(seq, run.preds)).toBeGreaterThan(1e-3);
  }, 60_000);
});
