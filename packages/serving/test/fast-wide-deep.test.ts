import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { createModel, initBackend, predict, type Example, type Model } from '@freshet/model';
import { initRow } from '@freshet/protocol';
import { FastWideDeep, type ParamSource } from '../src/fast-wide-deep.js';
import { batchRows, requestExamples } from '../src/scorer.js';

const config = {
  kind: 'wide-deep' as const,
  embeddingDim: 8,
  hidden: [16, 8],
  features: {
    fields: [
      { kind: 'categorical' as const, name: 'user' },
      { kind: 'categorical' as const, name: 'item' },
      { kind: 'categorical' as const, name: 'device' },
      { kind: 'tokens' as const, name: 'query', maxTokens: 4 },
      { kind: 'numeric' as const, name: 'price', transform: 'log1p' as const },
      { kind: 'numeric' as const, name: 'hour' },
      { kind: 'cross' as const, name: 'user_x_device', fields: ['user', 'device'] },
    ],
  },
};

/** Non-trivial weights: every row and tensor random but deterministic per key. */
function randomParams(model: Model): ParamSource {
  const dense = new Map<number, Float32Array>();
  return {
    rows(t, keys) {
      const dim = model.spec.tables[t]!.dim;
      const out = new Float32Array((keys.length / 2) * dim);
      for (let i = 0; i < keys.length / 2; i++)
        initRow(
          { kind: 'uniform', scale: 0.5, seed: 11 + t },
          keys[2 * i]!,
          keys[2 * i + 1]!,
          out,
          i * dim,
          dim,
        );
      return out;
    },
    dense(t) {
      let d = dense.get(t);
      if (!d) {
        d = new Float32Array(model.spec.tables[t]!.dim);
        initRow({ kind: 'uniform', scale: 0.4, seed: 100 + t }, 0, 0, d);
        dense.set(t, d);
      }
      return d;
    },
  };
}

/** {@link randomParams} with dense tensors of its own, which a test rewrites in place and announces by `stamp`. */
function rewritableParams(
  model: Model,
  stamp: (table: number) => number,
): { params: ParamSource; dense: Map<number, Float32Array> } {
  const base = randomParams(model);
  const dense = new Map<number, Float32Array>();
  const params: ParamSource = {
    rows: (t, keys) => base.rows(t, keys),
    dense(t) {
      let d = dense.get(t);
      if (!d) dense.set(t, (d = base.dense(t).slice()));
      return d;
    },
    stamp,
  };
  return { params, dense };
}

describe('FastWideDeep', () => {
  beforeAll(async () => {
    await initBackend();
  });

  it.each(['js', 'tfjs'] as const)(
    'agrees with @freshet/model predict on a ranking batch (%s GEMM)',
    (gemm) => {
      const model = createModel(config);
      const params = randomParams(model);
      const fast = new FastWideDeep(model.layout, { gemm });
      const candidates = Array.from(
        { length: 50 },
        (_, i): { item: string; features: Record<string, string | number> } => ({
          item: `item-${i}`,
          features: i % 3 === 0 ? { price: i * 1.5 } : i % 3 === 1 ? { price: 2, query: 'red shoes' } : {},
        }),
      );
      const batch = model.encode(
        requestExamples(
          { user: 'user', item: 'item' },
          'u-42',
          { device: 'ios', hour: 13, query: 'cheap red shoes' },
          candidates,
        ),
      );
      const want = predict(model, batch, batchRows(model, batch, params));
      const got = fast.predict(batch, params);
      expect(got.length).toBe(50);
      for (let i = 0; i < 50; i++) expect(got[i]).toBeCloseTo(want[i]!, 5);
      // The weights are not degenerate: scores differ across candidates.
      expect(Math.max(...got) - Math.min(...got)).toBeGreaterThan(1e-3);
    },
  );

  it.each(['js', 'tfjs'] as const)(
    'agrees when nothing is shared, for one example, with missing fields (%s)',
    (gemm) => {
      const model = createModel(config);
      const params = randomParams(model);
      const fast = new FastWideDeep(model.layout, { gemm });
      const examples = Array.from({ length: 20 }, (_, i): Example => ({
        features:
          i % 4 === 0
            ? { item: `x${i}` }
            : { user: `u${i}`, item: `x${i}`, device: i % 2 ? 'web' : 'ios', hour: i, query: `t${i} q` },
        label: 0,
      }));
      for (const ex of [examples, examples.slice(0, 1)]) {
        const batch = model.encode(ex);
        const want = predict(model, batch, batchRows(model, batch, params));
        const got = fast.predict(batch, params);
        for (let i = 0; i < ex.length; i++) expect(got[i]).toBeCloseTo(want[i]!, 5);
      }
    },
  );

  it.each(['js', 'tfjs'] as const)(
    'joins a partitioned MLP, and joins again when one part changes (%s)',
    (gemm) => {
      const model = createModel({ ...config, densePartFloats: 64 });
      expect(model.layout.mlp[0]!.w.tables.length).toBeGreaterThan(2);
      const stamps = new Map<number, number>();
      const { params } = rewritableParams(model, (t) => stamps.get(t) ?? 0);
      const fast = new FastWideDeep(model.layout, { gemm });
      const batch = model.encode(
        Array.from({ length: 24 }, (_, i): Example => ({
          features: { user: 'u1', device: 'web', item: `i${i}`, price: i, hour: 9 },
          label: 0,
        })),
      );
      const check = () => {
        const want = predict(model, batch, batchRows(model, batch, params));
        const got = fast.predict(batch, params);
        for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i]!, 5);
        return got;
      };
      const first = check();
      // one part of the first layer rewritten in place, announced by its own stamp only
      const part = model.layout.mlp[0]!.w.tables[1]!;
      const d = params.dense(part);
      for (let i = 0; i < d.length; i++) d[i] = -d[i]! * 3;
      stamps.set(part, 1);
      expect(Array.from(check())).not.toEqual(Array.from(first));
    },
  );

  it('follows dense weights that change (stamped caches) and keeps no tensor per call (tfjs)', () => {
    const model = createModel(config);
    let stamp = 0;
    const { params, dense } = rewritableParams(model, () => stamp);
    const fast = new FastWideDeep(model.layout, { gemm: 'tfjs' });
    const examples = Array.from({ length: 32 }, (_, i): Example => ({
      features: { user: 'u1', device: 'ios', item: `i${i}`, price: i, hour: 3 },
      label: 0,
    }));
    const batch = model.encode(examples);
    fast.predict(batch, params); // builds and keeps the cached tensors
    const tensors = tf.memory().numTensors;
    for (let round = 0; round < 20; round++) {
      for (const d of dense.values()) for (let i = 0; i < d.length; i += 7) d[i] = d[i]! * -0.9 + 0.01;
      stamp++;
      const want = tf.tidy(() => predict(model, batch, batchRows(model, batch, params)));
      const got = fast.predict(batch, params);
      for (let i = 0; i < examples.length; i++) expect(got[i]).toBeCloseTo(want[i]!, 5);
      // Same stamp: served from the caches, same answer.
      expect(Array.from(fast.predict(batch, params))).toEqual(Array.from(got));
    }
    expect(tf.memory().numTensors).toBe(tensors);
    fast.dispose();
    expect(tf.memory().numTensors).toBeLessThan(tensors);
  });

  it('refuses model kinds it has no forward pass for', () => {
    const model = createModel({ ...config, kind: 'fm' });
    expect(() => new FastWideDeep(model.layout)).toThrow(/no fast path/);
  });
});
