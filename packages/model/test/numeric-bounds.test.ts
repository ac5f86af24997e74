import { beforeAll, describe, expect, it } from 'vitest';
import { MAX_ABS_GRADIENT } from '@freshet/protocol';
import {
  computeGradients,
  createModel,
  initBackend,
  initRows,
  NUMERIC_INPUT_LIMIT,
  NUMERIC_LIMIT,
  type Example,
} from '../src/index.js';

beforeAll(async () => {
  await initBackend();
});

// Numeric features at the edges of float64 and float32 reach the model bounded and counted:
// nothing non-finite, nothing whose gradient square could overflow float32.
const edge: Array<number | string> = [3e38, 1e300, -1e308, 1e-45, 5e-324, -0, 'NaN', 'Infinity', '1e400', 42];

function model(
  transform: 'none' | 'log1p' | 'standardise' | 'log1p-standardise',
  clip?: { min: number; max: number },
) {
  return createModel({
    name: 'bounds',
    kind: 'fm',
    features: {
      fields: [
        { kind: 'categorical', name: 'user' },
        { kind: 'numeric', name: 'price', transform, ...(clip ? { clip } : {}) },
      ],
    },
  });
}

const examples = (): Example[] =>
  edge.map((price, i) => ({ features: { user: `u${i}`, price }, label: i % 2, weight: 1000 }));

describe('numeric feature bounds', () => {
  for (const transform of ['none', 'log1p', 'standardise', 'log1p-standardise'] as const) {
    it(`${transform}: every input is finite and within ±${NUMERIC_INPUT_LIMIT}; clips are counted`, () => {
      const m = model(transform);
      const b = m.encode(examples());
      for (const x of b.numeric) {
        expect(Number.isFinite(x)).toBe(true);
        expect(Math.abs(x)).toBeLessThanOrEqual(NUMERIC_INPUT_LIMIT);
      }
      // 3e38, 1e300 and -1e308 are beyond the raw range (NaN/Infinity strings are missing values)
      expect(m.encoder.clipped().price).toBeGreaterThanOrEqual(3);
    });
  }

  it('clips raw values to the field range before the transform, once per value', () => {
    const m = model('none', { min: 0, max: 100 });
    const b = m.encode([
      { features: { price: 3e38 }, label: 1 },
      { features: { price: -5 }, label: 0 },
      { features: { price: 50 }, label: 0 },
    ]);
    expect([...b.numeric]).toEqual([100, 0, 50]);
    expect(m.encoder.clipped()).toEqual({ price: 2 });
    // a field range wider than the global one is narrowed to it
    const wide = model('none', { min: -1e12, max: 1e12 });
    expect([...wide.encode([{ features: { price: 1e11 }, label: 1 }]).numeric]).toEqual([
      NUMERIC_INPUT_LIMIT,
    ]);
    expect(wide.encoder.clipped()).toEqual({ price: 1 });
    expect(NUMERIC_LIMIT).toBeGreaterThan(NUMERIC_INPUT_LIMIT);
  });

  it('a standardised column keeps finite statistics after an outlier', () => {
    const m = model('standardise');
    m.encode(examples());
    const st = m.encoder.runningStats().price!;
    expect(Number.isFinite(st.mean) && Number.isFinite(st.m2)).toBe(true);
    expect(Math.abs(st.mean)).toBeLessThanOrEqual(NUMERIC_LIMIT);
  });

  it('an FM on the worst inputs (weight 1000) computes finite gradients below MAX_ABS_GRADIENT', () => {
    const m = model('none');
    const batch = m.encode(examples());
    const r = computeGradients(m, batch, initRows(m, batch));
    for (const g of r.grads) {
      if (!g) continue;
      for (const x of g) {
        expect(Number.isFinite(x)).toBe(true);
        expect(Math.abs(x)).toBeLessThan(MAX_ABS_GRADIENT);
      }
    }
  });
});
