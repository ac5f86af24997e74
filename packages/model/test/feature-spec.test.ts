import { describe, expect, it } from 'vitest';
import { FreshetError, bucketId, featureId } from '@freshet/protocol';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  bucketOf,
  compileFeatureSpec,
  compileModelConfig,
  createModel,
  mergeRunningStats,
  readFeatureSpec,
} from '../src/index.js';
import { mixedExamples, mixedSpec } from './helpers.js';

function configError(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(FreshetError);
    expect((err as FreshetError).code).toBe('CONFIG');
    return (err as Error).message;
  }
  throw new Error('expected a CONFIG error');
}

describe('feature spec', () => {
  it('lays out slots: one per categorical/bucket/cross field, maxTokens per token list', () => {
    const c = compileFeatureSpec(mixedSpec);
    expect(c.sparse.map((f) => [f.name, f.slot, f.width])).toEqual([
      ['user', 0, 1],
      ['country', 1, 1],
      ['query', 2, 3],
      ['item', 5, 1],
      ['price', 6, 1],
      ['user_x_item', 7, 1],
    ]);
    expect(c.slots).toBe(8);
    expect(c.numeric.map((n) => n.name)).toEqual(['age', 'clicks', 'price']);
  });

  it('orders user-tower fields first for two-tower models', () => {
    const c = compileFeatureSpec(
      {
        fields: [
          { kind: 'categorical', name: 'item', tower: 'item' },
          { kind: 'categorical', name: 'user', tower: 'user' },
        ],
      },
      true,
    );
    expect(c.sparse.map((f) => f.name)).toEqual(['user', 'item']);
  });

  it.each([
    [{ fields: [] }, /fields/],
    [{ fields: [{ kind: 'colour', name: 'a' }] }, /kind/],
    [{ fields: [{ kind: 'categorical', name: 'a b' }] }, /field names/],
    [
      {
        fields: [
          { kind: 'categorical', name: 'a' },
          { kind: 'categorical', name: 'a' },
        ],
      },
      /duplicate field "a"/,
    ],
    [
      {
        fields: [
          { kind: 'categorical', name: 'a' },
          { kind: 'cross', name: 'x', fields: ['a', 'b'] },
        ],
      },
      /cross "x" refers to unknown field "b"/,
    ],
    [
      {
        fields: [
          { kind: 'categorical', name: 'a' },
          { kind: 'tokens', name: 'q' },
          { kind: 'cross', name: 'x', fields: ['a', 'q'] },
        ],
      },
      /needs categorical or bucketised fields, "q" is tokens/,
    ],
    [{ fields: [{ kind: 'numeric', name: 'p', buckets: [1, 1] }] }, /strictly increasing/],
    [{ fields: [{ kind: 'numeric', name: 'p' }] }, /no sparse field/],
    [{ fields: [{ kind: 'tokens', name: 'q', maxTokens: 0 }] }, /maxTokens/],
  ])('rejects bad spec %#', (spec, message) => {
    expect(configError(() => compileFeatureSpec(spec))).toMatch(message);
  });

  it('reads a JSON file and names the file when it cannot', () => {
    const dir = mkdtempSync(join(tmpdir(), 'freshet-model-'));
    const good = join(dir, 'good.json');
    writeFileSync(good, JSON.stringify(mixedSpec));
    expect(readFeatureSpec(good).fields).toHaveLength(mixedSpec.fields.length);
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"fields": [');
    expect(configError(() => readFeatureSpec(bad))).toMatch(/bad\.json/);
  });
});

describe('model config', () => {
  it('declares the peer wide&deep tables: 429→128→64→1, N(0, 0.01) embeddings, zero wide', async () => {
    const { criteoWideDeepConfig } = await import('../src/index.js');
    const { spec, layout } = compileModelConfig(criteoWideDeepConfig());
    expect(spec.tables.map((t) => `${t.name}:${t.kind}:${t.dim}`)).toEqual([
      'emb:sparse:16',
      'wide:sparse:1',
      'mlp.0.w:dense:54912',
      'mlp.0.b:dense:128',
      'mlp.1.w:dense:8192',
      'mlp.1.b:dense:64',
      'mlp.2.w:dense:64',
      'mlp.2.b:dense:1',
    ]);
    expect(layout.mlp.map((l) => [l.in, l.out])).toEqual([
      [429, 128],
      [128, 64],
      [64, 1],
    ]);
    expect(spec.tables[0]!.init).toEqual({ kind: 'normal', std: 0.01, seed: 0 });
    expect(spec.tables[1]!.init).toEqual({ kind: 'zeros' });
    expect(spec.tables[2]!.init).toMatchObject({ kind: 'uniform', scale: 1 / Math.sqrt(429) });
    // Distinct seeds: no two dense tensors start equal.
    const seeds = spec.tables.flatMap((t) => (t.init.kind === 'uniform' ? [t.init.seed] : []));
    expect(new Set(seeds).size).toBe(seeds.length);
  });

  it('puts optimizer settings and per-table overrides into the table specs', () => {
    const { spec } = compileModelConfig({
      kind: 'fm',
      features: mixedSpec,
      optimizer: { kind: 'adagrad', lr: 0.1 },
      l2: 1e-6,
      tables: { emb: { optimizer: { kind: 'ftrl', alpha: 0.1 }, minCount: 3, ttlMs: 60_000 } },
    });
    const emb = spec.tables.find((t) => t.name === 'emb')!;
    const wide = spec.tables.find((t) => t.name === 'wide')!;
    expect(emb.optimizer.kind).toBe('ftrl');
    expect(emb.minCount).toBe(3);
    expect(emb.ttlMs).toBe(60_000);
    expect(emb.l2).toBe(1e-6);
    expect(wide.optimizer).toMatchObject({ kind: 'adagrad', lr: 0.1 });
  });

  it('gives the seed model Adam with lr 0.001', () => {
    const { spec } = compileModelConfig({
      kind: 'seed',
      features: { fields: [{ kind: 'tokens', name: 'q' }] },
    });
    for (const t of spec.tables) expect(t.optimizer).toMatchObject({ kind: 'adam', lr: 0.001 });
    expect(spec.tables.map((t) => t.name)).toEqual(['emb', 'out.0.w', 'out.0.b']);
  });

  it.each([
    [{ kind: 'svm', features: mixedSpec }, /kind/],
    [
      { kind: 'lr', features: mixedSpec, tables: { embedding: { l2: 1 } } },
      /no table named "embedding" \(tables: wide, lin\)/,
    ],
    [{ kind: 'lr', features: mixedSpec, tables: { wide: { l2: -1 } } }, /l2/],
    [{ kind: 'lr', features: mixedSpec, embeddingDim: 0 }, /embeddingDim/],
    [{ kind: 'two-tower', features: { fields: [{ kind: 'categorical', name: 'a' }] } }, /user and item/],
    [{ kind: 'lr', features: mixedSpec, typo: 1 }, /typo/],
  ])('rejects bad config %#', (config, message) => {
    expect(configError(() => compileModelConfig(config))).toMatch(message);
  });
});

describe('encode', () => {
  const model = createModel({ kind: 'wide-deep', features: mixedSpec, embeddingDim: 4, hidden: [4] });

  it('hashes values to featureId(field, value) and shares the key set between sparse tables', () => {
    const batch = model.encode([{ features: { user: 'u1', item: 7, query: 'Red red shoes' }, label: 1 }]);
    expect(batch.sparse.map((s) => s.table)).toEqual(model.layout.sparseTables);
    const s = batch.sparse[0]!;
    expect(batch.sparse[1]!.keys).toBe(s.keys);
    const id = (field: string, value: string) => {
      const out = new Uint32Array(2);
      featureId(field, value, out);
      return Array.from(out);
    };
    const keyAt = (slot: number) => {
      const k = s.index[slot]!;
      return k < 0 ? null : Array.from(s.keys.subarray(2 * k, 2 * k + 2));
    };
    expect(keyAt(0)).toEqual(id('user', 'u1'));
    expect(keyAt(1)).toBeNull(); // country missing
    // Lower-cased tokens; the repeated token maps to one key; mean pooling weights 1/3.
    expect(keyAt(2)).toEqual(id('query', 'red'));
    expect(keyAt(3)).toEqual(id('query', 'red'));
    expect(keyAt(4)).toEqual(id('query', 'shoes'));
    expect(Array.from(s.slotWeights!.subarray(2, 5))).toEqual([1 / 3, 1 / 3, 1 / 3].map(Math.fround));
    expect(keyAt(5)).toEqual(id('item', '7'));
    expect(keyAt(6)).toEqual(id('price', 'b0')); // missing price → 0 → first bucket
    expect(keyAt(7)).toEqual(id('user_x_item', 'u1\u00027'));
    expect(s.keys.length / 2).toBe(6);
    expect(Array.from(s.counts)).toEqual([1, 1, 1, 1, 1, 1]);
  });

  it('with hashBuckets every value of every field lands in one of that many shared rows', () => {
    const hashed = createModel({
      kind: 'wide-deep',
      features: { ...mixedSpec, hashBuckets: 3 },
      embeddingDim: 4,
      hidden: [4],
    });
    const examples = Array.from({ length: 40 }, (_, i) => ({
      features: { user: `u${i}`, item: i, query: `q${i} w${i}`, country: `c${i % 7}` },
      label: i % 2,
    }));
    const s = hashed.encode(examples).sparse[0]!;
    const id = (field: string, value: string) => {
      const out = new Uint32Array(2);
      bucketId(field, value, 3, out);
      return Array.from(out);
    };
    // Hundreds of values, three rows: they collide, across fields too.
    expect(s.keys.length / 2).toBe(3);
    expect(Array.from(s.keys.subarray(2 * s.index[0]!, 2 * s.index[0]! + 2))).toEqual(id('user', 'u0'));
    expect(Array.from(s.keys.subarray(2 * s.index[5]!, 2 * s.index[5]! + 2))).toEqual(id('item', '0'));
    // Without it the same examples get collision-free ids.
    expect(model.encode(examples).sparse[0]!.keys.length / 2).toBeGreaterThan(100);
    configError(() => compileFeatureSpec({ ...mixedSpec, hashBuckets: 1 }));
  });

  it('counts examples (not slots) per key, truncates token lists and drops empty tokens', () => {
    const batch = model.encode([
      { features: { user: 'a', query: ['x', 'x', '', 'y', 'z', 'w'] }, label: 0 },
      { features: { user: 'a', country: '' }, label: 1 },
    ]);
    const s = batch.sparse[0]!;
    const ka = s.index[0]!;
    expect(s.counts[ka]).toBe(2);
    const kx = s.index[2]!;
    expect(s.counts[kx]).toBe(1);
    expect(Array.from(s.index.subarray(2, 5)).every((k) => k >= 0)).toBe(true);
    expect(s.index[8 + 1]).toBe(-1); // '' with emptyAsMissing
    expect(s.slotWeights![8 + 1]).toBe(0);
  });

  it('applies log1p (≤ 0 and missing → 0), running standardisation and buckets', () => {
    const m = createModel({ kind: 'lr', features: mixedSpec });
    const ex = [
      { features: { user: 'a', age: 20, clicks: -3, price: 5 }, label: 0 },
      { features: { user: 'a', age: 40, clicks: Math.E - 1, price: 150 }, label: 1 },
    ];
    const batch = m.encode(ex);
    const n = m.layout.numericDim;
    expect(n).toBe(3);
    const row = (b: number) => Array.from(batch.numeric.subarray(b * n, b * n + n));
    // age: mean 30, sd √200 → ±0.7071
    expect(row(0)[0]).toBeCloseTo(-10 / Math.sqrt(200), 5);
    expect(row(1)[0]).toBeCloseTo(10 / Math.sqrt(200), 5);
    expect(row(0)[1]).toBe(0);
    expect(row(1)[1]).toBeCloseTo(1, 6);
    expect(row(1)[2]).toBeCloseTo(Math.log1p(150), 5);
    expect(m.encoder.runningStats().age).toMatchObject({ n: 2, mean: 30 });
    expect(bucketOf([10, 100], 5)).toBe(0);
    expect(bucketOf([10, 100], 10)).toBe(1);
    expect(bucketOf([10, 100], 150)).toBe(2);
  });

  it('merges running statistics of disjoint samples exactly, and a frozen encoder keeps its own', () => {
    const xs = [3, 8, -2, 40, 7.5, 0.25, 19, 11, -6, 4];
    const stats = (vals: number[]) => {
      const m = createModel({ kind: 'lr', features: mixedSpec });
      m.encode(vals.map((age) => ({ features: { user: 'a', age }, label: 0 })));
      return m.encoder.runningStats();
    };
    const merged = mergeRunningStats([stats(xs.slice(0, 3)), stats(xs.slice(3, 4)), stats(xs.slice(4))]);
    const whole = stats(xs).age!;
    expect(merged.age!.n).toBe(whole.n);
    expect(merged.age!.mean).toBeCloseTo(whole.mean, 12);
    expect(merged.age!.m2).toBeCloseTo(whole.m2, 9);
    expect(mergeRunningStats([{ age: { n: 0, mean: 0, m2: 0 } }, { age: whole }]).age).toEqual(whole);

    const serving = createModel({ kind: 'lr', features: mixedSpec });
    serving.encoder.freezeStats();
    serving.encoder.setRunningStats({ age: whole });
    expect(serving.encoder.standardised).toEqual(['age']);
    const z = serving.encode([{ features: { user: 'b', age: 1000 }, label: 0 }]).numeric[0]!;
    expect(serving.encoder.runningStats().age).toEqual(whole); // a request does not move them
    expect(z).toBeCloseTo((1000 - whole.mean) / Math.sqrt(whole.m2 / (whole.n - 1)), 4);
  });

  it('rejects an empty batch and non-finite labels with BAD_REQUEST', () => {
    expect(() => model.encode([])).toThrow(FreshetError);
    expect(() => model.encode([{ features: {}, label: NaN }])).toThrow(/finite/);
    expect(() => model.encode([{ features: {}, label: 1, weight: -1 }])).toThrow(/weight/);
  });

  it('encodes a larger batch consistently: every index in range, weights sum to 1 per field', () => {
    const batch = model.encode(mixedExamples(50));
    const s = batch.sparse[0]!;
    const u = s.keys.length / 2;
    expect(s.index.every((k) => k >= -1 && k < u)).toBe(true);
    const q = model.layout.features.sparse.find((f) => f.name === 'query')!;
    for (let b = 0; b < batch.size; b++) {
      let w = 0;
      for (let j = 0; j < q.width; j++) w += s.slotWeights![b * s.slots + q.slot + j]!;
      expect(w).toBeCloseTo(1, 5);
    }
    expect(s.counts.reduce((a, c) => a + c, 0)).toBeGreaterThan(u - 1);
  });
});
