import { beforeAll, describe, expect, it } from 'vitest';
import { computeGradients, createModel, initBackend, modelKinds, type ModelKind } from '../src/index.js';
import { mixedExamples, mixedSpec, noisyRows, normal, rng } from './helpers.js';

// Central differences on the float32 loss: h is large enough that rounding (~1e-7 / h) stays
// far below the tolerance and small enough that curvature (~h²) does too. Single coordinates
// use a smaller step: a 1e-2 nudge of a first-layer weight can push a ReLU across its kink.
const H = 1e-2;
const H_COORD = 2e-3;

beforeAll(async () => {
  await initBackend();
});

function modelOf(kind: ModelKind) {
  return createModel({ kind, features: mixedSpec, embeddingDim: 4, hidden: [6, 5], towerDim: 3 });
}

describe.each(modelKinds)('gradient of %s', (kind) => {
  it('matches finite differences along random directions and per coordinate', () => {
    const model = modelOf(kind);
    const batch = model.encode(mixedExamples(7, 3));
    const rows = noisyRows(model, batch, 11);
    const { grads, loss } = computeGradients(model, batch, rows);
    expect(Number.isFinite(loss)).toBe(true);
    const lossAt = (rs: Float32Array[]) => computeGradients(model, batch, rs).loss;

    // Every table the batch touches has a gradient of its rows' shape.
    for (const id of [...model.layout.sparseTables, ...model.layout.denseTables]) {
      expect(grads[id]?.length, `table ${model.spec.tables[id]!.name}`).toBe(rows[id]!.length);
    }

    // 1. Directional derivatives: over all parameters at once, then over each table alone (so a
    // small table's error cannot hide behind a large one's gradient).
    const r = rng(99);
    const scopes: (number | 'all')[] = ['all', ...rows.keys()];
    for (const scope of scopes) {
      const dir = rows.map((x, id) =>
        Float32Array.from(x, () => (scope === 'all' || scope === id ? normal(r) : 0)),
      );
      const norm = Math.sqrt(dir.reduce((s, d) => s + d.reduce((a, v) => a + v * v, 0), 0));
      let analytic = 0;
      dir.forEach((d, id) => d.forEach((v, i) => (analytic += (v / norm) * grads[id]![i]!)));
      const shifted = (sign: number) =>
        rows.map((x, id) => x.map((v, i) => v + (sign * H * dir[id]![i]!) / norm));
      const numeric = (lossAt(shifted(1)) - lossAt(shifted(-1))) / (2 * H);
      expect(
        Math.abs(numeric - analytic),
        `${kind} direction ${scope}: fd ${numeric} vs ${analytic}`,
      ).toBeLessThan(0.02 * Math.abs(analytic) + 1e-4);
    }

    // 2. The largest coordinates of each table (sparse rows summed over repeated keys).
    for (const [id, g] of grads.entries()) {
      if (!g) continue;
      const top = [...g.keys()].sort((a, b) => Math.abs(g[b]!) - Math.abs(g[a]!)).slice(0, 3);
      for (const i of top) {
        const plus = rows.map((x) => x.slice());
        const minus = rows.map((x) => x.slice());
        plus[id]![i]! += H_COORD;
        minus[id]![i]! -= H_COORD;
        const numeric = (lossAt(plus) - lossAt(minus)) / (2 * H_COORD);
        expect(
          Math.abs(numeric - g[i]!),
          `${kind} table ${model.spec.tables[id]!.name}[${i}]: fd ${numeric} vs ${g[i]}`,
        ).toBeLessThan(0.03 * Math.abs(g[i]!) + 3e-4);
      }
    }
  });
});

describe('gradients', () => {
  it('are zero for rows of keys only in zero-weight examples and sum over repeated keys', () => {
    const model = modelOf('wide-deep');
    const examples = mixedExamples(4, 5);
    examples[0]!.features.item = 'only-here';
    examples[0]!.weight = 0;
    const batch = model.encode(examples);
    const rows = noisyRows(model, batch, 2);
    const { grads } = computeGradients(model, batch, rows);
    const s = batch.sparse.find((x) => x.table === model.layout.emb)!;
    const slot = model.layout.features.sparse.find((f) => f.name === 'item')!.slot;
    const k = s.index[0 * s.slots + slot]!;
    const dim = model.spec.tables[model.layout.emb!]!.dim;
    expect(Array.from(grads[model.layout.emb!]!.subarray(k * dim, (k + 1) * dim))).toEqual([0, 0, 0, 0]);
  });

  it('at an all-zero logistic regression are (σ(0) − y)·x, not a subgradient', () => {
    const model = createModel({ kind: 'lr', features: { fields: [{ kind: 'categorical', name: 'a' }] } });
    const batch = model.encode([
      { features: { a: 'x' }, label: 1 },
      { features: { a: 'y' }, label: 0 },
    ]);
    const rows = [new Float32Array(2), new Float32Array(1)];
    const { grads, preds, loss } = computeGradients(model, batch, rows);
    expect(Array.from(preds)).toEqual([0.5, 0.5]);
    expect(loss).toBeCloseTo(Math.log(2), 6);
    expect(Array.from(grads[0]!)).toEqual([-0.25, 0.25]);
    expect(grads[1]![0]).toBeCloseTo(0, 7);
  });

  it('throws NON_FINITE instead of returning a non-finite gradient', () => {
    const model = modelOf('wide-deep');
    const batch = model.encode(mixedExamples(4, 8));
    const rows = noisyRows(model, batch, 3);
    rows[model.layout.emb!]![0] = Number.NaN;
    let err: unknown;
    try {
      computeGradients(model, batch, rows);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'NON_FINITE' });
  });
});
