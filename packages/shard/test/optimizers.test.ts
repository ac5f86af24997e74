import { describe, expect, it } from 'vitest';
import { AdamBias, adamRows } from '../src/optimizers/adam.js';
import { adagradInitRow, adagradRows } from '../src/optimizers/adagrad.js';
import { ftrlInitRow, ftrlRows } from '../src/optimizers/ftrl.js';
import { sgdRows } from '../src/optimizers/sgd.js';
import { RowStore } from '../src/row-store.js';

const dim = 3;
function storeWith(stateDim: number, init: number[][]) {
  const s = new RowStore({ dim, stateDim, chunkRows: 4 });
  const rows = init.map((w, i) => {
    const r = s.insert(i + 1, 0, 1);
    s.chunkF(r).set(w, s.valueOffset(r));
    return r;
  });
  return { s, rows: Int32Array.from(rows) };
}
const w = (s: RowStore, r: number) =>
  Array.from(s.chunkF(r).subarray(s.valueOffset(r), s.valueOffset(r) + dim));

describe('optimizer kernels', () => {
  it('Adam in row mode (tableStep 0) uses each row’s own step count for bias correction, with L2 and clipping', () => {
    const h = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    const { s, rows } = storeWith(2 * dim, [
      [1, 2, 3],
      [0, 0, 0],
    ]);
    const bias = new AdamBias(h.beta1, h.beta2);
    const g = Float32Array.from([3, 0, 4, 1, 1, 1]);
    // Row 1 is updated twice, row 0 once: row 0's first update must match a fresh Adam step.
    adamRows(s, Int32Array.from([-1, rows[1]!]), 0, 2, g, h, bias, {
      lrScale: 1,
      l2: 0,
      clipNorm: 0,
      gradScale: 1,
    });
    adamRows(s, rows, 0, 2, g, h, bias, { lrScale: 1, l2: 0.5, clipNorm: 1, gradScale: 1 });
    // Reference in float64: row 0, step 1, g clipped to norm 1 then + l2·w.
    const gw = [3 / 5 + 0.5 * 1, 0 + 0.5 * 2, 4 / 5 + 0.5 * 3];
    const ref0 = [1, 2, 3].map((x, k) => {
      const m = 0.1 * gw[k]!;
      const v = 0.001 * gw[k]! * gw[k]!;
      return x - (0.1 / (1 - 0.9)) * (m / (Math.sqrt(v) / Math.sqrt(1 - 0.999) + 1e-8));
    });
    w(s, rows[0]!).forEach((x, k) => expect(x).toBeCloseTo(ref0[k]!, 5));
    expect(s.step(rows[0]!)).toBe(1);
    expect(s.step(rows[1]!)).toBe(2);
    // Row 1: two steps of g = 1/√3 each (clipped on the second) from 0.
    let x = 0;
    let m = 0;
    let v = 0;
    for (const [t, gk] of [
      [1, 1],
      [2, 1 / Math.sqrt(3)],
    ] as const) {
      const gg = gk + (t === 2 ? 0.5 * x : 0);
      m = 0.9 * m + 0.1 * gg;
      v = 0.999 * v + 0.001 * gg * gg;
      x -= (0.1 / (1 - 0.9 ** t)) * (m / (Math.sqrt(v) / Math.sqrt(1 - 0.999 ** t) + 1e-8));
    }
    expect(w(s, rows[1]!)[0]).toBeCloseTo(x, 5);
  });

  it('Adagrad, FTRL and SGD follow their update rules', () => {
    const a = storeWith(dim, [[1, 1, 1]]);
    const ha = { lr: 0.5, initialAccumulator: 0.1, eps: 1e-10 };
    adagradInitRow(a.s.chunkF(a.rows[0]!), a.s.valueOffset(a.rows[0]!), dim, ha);
    adagradRows(a.s, a.rows, 0, 1, Float32Array.from([1, 2, 0]), ha, {
      lrScale: 1,
      l2: 0,
      clipNorm: 0,
      gradScale: 1,
    });
    expect(w(a.s, a.rows[0]!)[0]).toBeCloseTo(1 - 0.5 / Math.sqrt(1.1), 5);
    expect(w(a.s, a.rows[0]!)[1]).toBeCloseTo(1 - 1 / Math.sqrt(4.1), 5);
    expect(w(a.s, a.rows[0]!)[2]).toBeCloseTo(1, 6);

    const f = storeWith(2 * dim, [[0.2, 0, 0]]);
    const hf = { alpha: 0.1, beta: 1, l1: 0.5, l2: 0 };
    ftrlInitRow(f.s.chunkF(f.rows[0]!), f.s.valueOffset(f.rows[0]!), dim, hf);
    ftrlRows(
      f.s,
      f.rows,
      0,
      1,
      Float32Array.from([0, 0.1, 10]),
      { ...hf },
      { lrScale: 1, l2: 0, clipNorm: 0, gradScale: 1 },
    );
    const [w0, w1, w2] = w(f.s, f.rows[0]!);
    expect(w0).toBeCloseTo(0.2, 5); // zero gradient keeps the initial weight
    expect(w1).toBe(0); // |z| ≤ l1: sparsity
    const z = 10 - ((Math.sqrt(100) - 0) / 0.1) * 0;
    expect(w2).toBeCloseTo(-(z - 0.5) / ((1 + 10) / 0.1), 5);

    const g = storeWith(0, [[1, 1, 1]]);
    sgdRows(
      g.s,
      g.rows,
      0,
      1,
      Float32Array.from([1, 0, -1]),
      { lr: 0.1 },
      { lrScale: 0.5, l2: 0, clipNorm: 0, gradScale: 1 },
    );
    expect(w(g.s, g.rows[0]!)).toEqual([1 - 0.05, 1, 1 + 0.05].map(Math.fround));
  });
});
