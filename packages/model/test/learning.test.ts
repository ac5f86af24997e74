import { beforeAll, describe, expect, it } from 'vitest';
import { initRow } from '@freshet/protocol';
import {
  computeGradients,
  createModel,
  initBackend,
  logLoss,
  predict,
  type Example,
  type Model,
} from '../src/index.js';
import { rng } from './helpers.js';

beforeAll(async () => {
  await initBackend();
});

/**
 * A synthetic click task with main effects and a user×item interaction (same parity of user and
 * item ids → likelier click), plus a query whose tokens carry signal.
 */
function examples(n: number, seed: number): Example[] {
  const r = rng(seed);
  const out: Example[] = [];
  for (let i = 0; i < n; i++) {
    const u = Math.floor(r() * 20);
    const it = Math.floor(r() * 20);
    const good = r() < 0.5;
    const logit = (good ? 2 : -2) + (it % 4) - 1.5 + (u % 2 === it % 2 ? 0.5 : -0.5);
    out.push({
      features: { user: `u${u}`, item: `i${it}`, query: good ? 'great deal' : 'bad deal', price: it * 10 },
      label: r() < 1 / (1 + Math.exp(-logit)) ? 1 : 0,
    });
  }
  return out;
}

const features = {
  fields: [
    { kind: 'categorical' as const, name: 'user', tower: 'user' as const },
    { kind: 'tokens' as const, name: 'query', tower: 'user' as const, maxTokens: 4 },
    { kind: 'categorical' as const, name: 'item', tower: 'item' as const },
    { kind: 'numeric' as const, name: 'price', tower: 'item' as const, transform: 'standardise' as const },
  ],
};

/** Plain SGD on an in-test parameter store: the shard's job, minimally, to drive the model. */
function train(model: Model, lr: number, steps: number, denseLr = lr): { first: number; last: number } {
  const sparse = new Map<string, Float32Array>();
  const dense = new Map<number, Float32Array>();
  const preds: number[] = [];
  const labels: number[] = [];
  const data = examples(steps * 32, 7);
  for (let step = 0; step < steps; step++) {
    const batch = model.encode(data.slice(step * 32, step * 32 + 32));
    const rows: Float32Array[] = [];
    for (const s of batch.sparse) {
      const t = model.spec.tables[s.table]!;
      const r = new Float32Array((s.keys.length / 2) * t.dim);
      for (let k = 0; k < s.keys.length / 2; k++) {
        const key = `${s.table}:${s.keys[2 * k]}:${s.keys[2 * k + 1]}`;
        let row = sparse.get(key);
        if (!row) {
          row = new Float32Array(t.dim);
          initRow(t.init, s.keys[2 * k]!, s.keys[2 * k + 1]!, row);
          sparse.set(key, row);
        }
        r.set(row, k * t.dim);
      }
      rows[s.table] = r;
    }
    for (const id of batch.denseTables) {
      const t = model.spec.tables[id]!;
      if (!dense.has(id)) {
        const w = new Float32Array(t.dim);
        initRow(t.init, 0, 0, w);
        dense.set(id, w);
      }
      rows[id] = dense.get(id)!;
    }
    const { grads, preds: p } = computeGradients(model, batch, rows);
    preds.push(...p);
    labels.push(...batch.labels);
    for (const s of batch.sparse) {
      const dim = model.spec.tables[s.table]!.dim;
      const g = grads[s.table]!;
      for (let k = 0; k < s.keys.length / 2; k++) {
        const row = sparse.get(`${s.table}:${s.keys[2 * k]}:${s.keys[2 * k + 1]}`)!;
        for (let d = 0; d < dim; d++) row[d]! -= lr * g[k * dim + d]! * 32; // per-row lr: undo the 1/B
      }
    }
    for (const id of batch.denseTables) {
      const w = dense.get(id)!;
      const g = grads[id]!;
      for (let i = 0; i < w.length; i++) w[i]! -= denseLr * g[i]!;
    }
  }
  const ll = (from: number, n: number) =>
    logLoss(Float32Array.from(preds.slice(from, from + n)), Float32Array.from(labels.slice(from, from + n)));
  return { first: ll(0, 32 * 10), last: ll(preds.length - 32 * 50, 32 * 50) };
}

describe('plain SGD on computeGradients', () => {
  it.each(['lr', 'fm', 'wide-deep', 'deepfm', 'two-tower', 'seed'] as const)(
    'drives the progressive loss of %s down',
    (kind) => {
      const model = createModel({ kind, features, embeddingDim: 8, hidden: [16], towerDim: 8 });
      const { first, last } = train(model, 0.05, 250, 0.5);
      const msg = `${kind}: first ${first.toFixed(3)} last ${last.toFixed(3)}`;
      expect(first, msg).toBeGreaterThan(0.55);
      // The task's Bayes loss is ≈ 0.38; a model that learns nothing stays near 0.6-0.7.
      expect(last, msg).toBeLessThan(0.45);
    },
  );
});

describe('predict', () => {
  it('agrees with the scores computeGradients reports and leaves no tensor behind', async () => {
    const tf = await import('@tensorflow/tfjs');
    const model = createModel({ kind: 'wide-deep', features, embeddingDim: 8, hidden: [16] });
    const batch = model.encode(examples(16, 3));
    const rows: Float32Array[] = [];
    for (const s of batch.sparse) {
      const t = model.spec.tables[s.table]!;
      rows[s.table] = new Float32Array((s.keys.length / 2) * t.dim).fill(0.01);
    }
    for (const id of batch.denseTables) {
      const t = model.spec.tables[id]!;
      const w = new Float32Array(t.dim);
      initRow(t.init, 0, 0, w);
      rows[id] = w;
    }
    const expected = computeGradients(model, batch, rows).preds;
    const before = tf.memory().numTensors;
    const p = predict(model, batch, rows);
    predict(model, batch, rows);
    expect(tf.memory().numTensors).toBe(before);
    for (let i = 0; i < batch.size; i++) expect(p[i]).toBeCloseTo(expected[i]!, 5);
  });
});
