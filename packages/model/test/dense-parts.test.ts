import { beforeAll, describe, expect, it } from 'vitest';
import { denseTensors, joinTensor, shardOfDense } from '@freshet/protocol';
import {
  compileModelConfig,
  computeGradients,
  createModel,
  initBackend,
  initRows,
  modelKinds,
  predict,
  type ModelKind,
} from '../src/index.js';
import { mixedExamples, mixedSpec, noisyRows } from './helpers.js';

beforeAll(async () => {
  await initBackend();
});

const config = (kind: ModelKind, densePartFloats: number) => ({
  kind,
  features: mixedSpec,
  embeddingDim: 4,
  hidden: [6, 5],
  towerDim: 3,
  densePartFloats,
});

describe('partitioned dense tensors', () => {
  it('split every tensor larger than densePartFloats into parts that tile it', () => {
    const { spec, layout } = compileModelConfig(config('wide-deep', 64));
    const w0 = layout.mlp[0]!.w;
    expect(w0.size).toBeGreaterThan(64);
    expect(w0.tables.length).toBe(Math.ceil(w0.size / 64));
    w0.tables.forEach((t, i) => {
      const table = spec.tables[t]!;
      expect(table.name).toBe(`${w0.name}.part${i}`);
      expect(table.dim).toBeLessThanOrEqual(64);
      expect(table.part).toEqual({ of: w0.name, index: i, count: w0.tables.length, offset: w0.offsets[i] });
    });
    // Small tensors stay whole, under their own names.
    const b1 = layout.mlp[1]!.b;
    expect(b1.tables.length).toBe(1);
    expect(spec.tables[b1.tables[0]!]!.name).toBe(b1.name);
    expect(denseTensors(spec).map((d) => d.name)).toEqual(layout.dense.map((d) => d.name));
  });

  it('put one tensor’s parts on distinct consecutive shards', () => {
    const { spec, layout } = compileModelConfig(config('wide-deep', 64));
    const w0 = layout.mlp[0]!.w;
    const shards = 64;
    const owners = w0.tables.map((t) => shardOfDense(spec.tables[t]!, shards));
    expect(new Set(owners).size).toBe(Math.min(owners.length, shards));
    owners.forEach((s, i) => expect(s).toBe((owners[0]! + i) % shards));
  });

  it('start from the whole tensor’s weights, and apply per-tensor overrides to every part', () => {
    const whole = createModel(config('wide-deep', 0));
    const parted = createModel({
      ...config('wide-deep', 64),
      tables: { 'mlp.0.w': { l2: 0.5 } },
    });
    const batch = whole.encode(mixedExamples(5, 2));
    const a = initRows(whole, batch);
    const b = initRows(parted, parted.encode(mixedExamples(5, 2)));
    parted.layout.dense.forEach((d, i) => {
      const w = whole.layout.dense[i]!;
      expect(d.name).toBe(w.name);
      expect(joinTensor(d, (t) => b[t]!)).toEqual(a[w.tables[0]!]!);
    });
    for (const t of parted.layout.mlp[0]!.w.tables) expect(parted.spec.tables[t]!.l2).toBe(0.5);
  });

  it.each(modelKinds.filter((k) => k !== 'lr'))(
    '%s: scores and gradients equal the whole model’s',
    (kind) => {
      const whole = createModel(config(kind, 0));
      const parted = createModel(config(kind, 64));
      const examples = mixedExamples(9, 4);
      const wb = whole.encode(examples);
      const pb = parted.encode(examples);
      const wr = noisyRows(whole, wb, 7);
      // The same values, cut into the partitioned model's parts.
      const pr = initRows(parted, pb);
      for (const s of pb.sparse) {
        const ws = wb.sparse.find(
          (x) => whole.spec.tables[x.table]!.name === parted.spec.tables[s.table]!.name,
        )!;
        pr[s.table] = wr[ws.table]!;
      }
      parted.layout.dense.forEach((d, i) => {
        const src = wr[whole.layout.dense[i]!.tables[0]!]!;
        d.tables.forEach(
          (t, j) => (pr[t] = src.slice(d.offsets[j]!, d.offsets[j]! + parted.spec.tables[t]!.dim)),
        );
      });
      const g1 = computeGradients(whole, wb, wr);
      const g2 = computeGradients(parted, pb, pr);
      expect(g2.loss).toBeCloseTo(g1.loss, 6);
      for (let i = 0; i < g1.preds.length; i++) expect(g2.preds[i]).toBeCloseTo(g1.preds[i]!, 6);
      expect(Array.from(predict(parted, pb, pr))).toEqual(Array.from(g2.preds));
      parted.layout.dense.forEach((d, i) => {
        const want = g1.grads[whole.layout.dense[i]!.tables[0]!]!;
        const got = joinTensor(d, (t) => g2.grads[t]!);
        expect(got.length).toBe(want.length);
        for (let k = 0; k < want.length; k++) expect(got[k]).toBeCloseTo(want[k]!, 5);
      });
    },
  );

  it('refuses partitioning lin under sequential FTRL, which reads it whole per example', () => {
    const numeric = Array.from({ length: 70 }, (_, i) => ({ kind: 'numeric' as const, name: `x${i}` }));
    const lr = {
      kind: 'lr' as const,
      features: { fields: [{ kind: 'categorical' as const, name: 'c' }, ...numeric] },
      optimizer: { kind: 'ftrl' as const },
      densePartFloats: 64,
    };
    expect(() => compileModelConfig(lr)).toThrow(/must not be partitioned/);
    expect(() => compileModelConfig({ ...lr, densePartFloats: 0 })).not.toThrow();
  });
});
