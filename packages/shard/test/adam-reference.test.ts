import { describe, expect, it } from 'vitest';
import { parseModelSpec, xorshift32, type PushRequest } from '@freshet/protocol';
import { useTempDirs } from '@freshet/testkit';
import { captureCheckpoint, loadCheckpoint, writeCheckpoint } from '../src/checkpoint.js';
import type { ShardCore } from '../src/shard-core.js';
import { inProcessCore } from './in-process-core.js';

const tempDir = useTempDirs();

/**
 * The shard's sparse Adam against a float64 reference of torch.optim.SparseAdam (torch 1.13
 * `_functional.sparse_adam`): one step count per parameter, incremented on every step; m and v
 * of the rows in the step's gradient only; w ← w − lr·√bc2/bc1 · m/(√v + ε).
 */
class SparseAdamReference {
  step = 0;
  readonly w: Float64Array;
  private readonly m: Float64Array;
  private readonly v: Float64Array;
  constructor(
    rows: number,
    readonly dim: number,
    readonly lr: number,
    readonly b1 = 0.9,
    readonly b2 = 0.999,
    readonly eps = 1e-8,
  ) {
    this.w = new Float64Array(rows * dim);
    this.m = new Float64Array(rows * dim);
    this.v = new Float64Array(rows * dim);
  }
  apply(rows: number[], g: Float32Array): void {
    this.step++;
    const bc1 = 1 - this.b1 ** this.step;
    const bc2 = 1 - this.b2 ** this.step;
    const size = (this.lr * Math.sqrt(bc2)) / bc1;
    rows.forEach((r, i) => {
      for (let k = 0; k < this.dim; k++) {
        const j = r * this.dim + k;
        const gk = g[i * this.dim + k]!;
        this.m[j] = this.b1 * this.m[j]! + (1 - this.b1) * gk;
        this.v[j] = this.b2 * this.v[j]! + (1 - this.b2) * gk * gk;
        this.w[j] = this.w[j]! - (size * this.m[j]!) / (Math.sqrt(this.v[j]!) + this.eps);
      }
    });
  }
}

const DIM = 4;
const ROWS = 40;
const coreOf = (biasCorrection: 'table' | 'row') =>
  inProcessCore(
    parseModelSpec({
      name: 'm',
      tables: [
        {
          name: 'emb',
          dim: DIM,
          optimizer: { kind: 'adam', lr: 0.01, biasCorrection },
          staleness: { policy: 'none' },
        },
      ],
    }),
  );
const keysOf = (rows: number[]) => Uint32Array.from(rows.flatMap((r) => [r + 1, 0]));
const read = (c: ShardCore) =>
  c.pull({ tables: [{ t: 0, keys: keysOf(Array.from({ length: ROWS }, (_, r) => r)) }] }).tables[0]!.values;

interface Step {
  rows: number[];
  g: Float32Array;
}

/**
 * A long-tailed stream: row r appears with probability ~1/(r+1), so most rows are first
 * touched late, when the table's step count is large — where table and row bias correction differ.
 */
function stream(seed: number, steps: number): Step[] {
  const rnd = xorshift32(seed);
  const out: Step[] = [];
  for (let s = 0; s < steps; s++) {
    const picked = Array.from({ length: ROWS }, (_, r) => r).filter(() => rnd() < 0.5 && rnd() * 3 < 1);
    if (picked.length === 0) picked.push(0);
    const g = Float32Array.from({ length: picked.length * DIM }, () => (rnd() - 0.45) * 2);
    out.push({ rows: picked, g });
  }
  return out;
}
const pushOf = (i: number, step: Step): PushRequest => ({
  id: `p${i}`,
  worker: 'w',
  clock: i,
  base: i,
  tables: [
    {
      t: 0,
      dim: DIM,
      keys: keysOf(step.rows),
      grads: step.g,
      counts: new Uint32Array(step.rows.length).fill(1),
    },
  ],
});
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0;
  for (let j = 0; j < a.length; j++) d = Math.max(d, Math.abs(a[j]! - b[j]!));
  return d;
};

describe('sparse Adam, table bias correction', () => {
  it('follows torch SparseAdam step for step on a sparse stream; row mode does not', () => {
    const steps = stream(7, 400);
    const ref = new SparseAdamReference(ROWS, DIM, 0.01);
    const table = coreOf('table');
    const row = coreOf('row');
    let worstTable = 0;
    steps.forEach((s, i) => {
      ref.apply(s.rows, s.g);
      table.applyPush(pushOf(i, s), Date.now());
      row.applyPush(pushOf(i, s), Date.now());
      if (i % 50 === 49) worstTable = Math.max(worstTable, maxDiff(read(table), ref.w));
    });
    expect(worstTable).toBeLessThan(2e-5);
    expect(table.tables[0]!.steps).toBe(400);
    // Per-row correction is far off the reference: a row's early steps are up to ~3× smaller.
    expect(maxDiff(read(row), ref.w)).toBeGreaterThan(100 * worstTable);
  });

  it('a late row’s first step is lr·√bc2(t)·(1−β1)/√(1−β2) in table mode and lr in row mode', () => {
    for (const mode of ['table', 'row'] as const) {
      const c = coreOf(mode);
      for (let i = 0; i < 500; i++)
        c.applyPush(pushOf(i, { rows: [0], g: Float32Array.from([1, 1, 1, 1]) }), 0);
      c.applyPush(pushOf(500, { rows: [1], g: Float32Array.from([1, -1, 2, -2]) }), 0);
      const w = read(c).subarray(DIM, 2 * DIM);
      // step 501: bc1 ≈ 1, bc2 = 1 − 0.999^501 ≈ 0.394, so the table-mode step is ≈ 1.99·lr
      const expected =
        mode === 'table' ? ((0.01 * 0.1) / Math.sqrt(0.001)) * Math.sqrt(1 - 0.999 ** 501) : 0.01;
      expect(w[0]).toBeCloseTo(-expected, 5);
      expect(w[1]).toBeCloseTo(expected, 5);
    }
  });

  it('keeps the table step count across a checkpoint: a restored shard goes on identically', async () => {
    const c = coreOf('table');
    for (let i = 0; i < 30; i++)
      c.applyPush(pushOf(i, { rows: [i % 3], g: Float32Array.from([1, 0, 0, 1]) }), Date.now());
    const dir = tempDir('adam-ckpt');
    await writeCheckpoint(dir, await captureCheckpoint(c, 1, 0), false);
    const restored = coreOf('table');
    await loadCheckpoint(dir, restored);
    expect(restored.tables[0]!.steps).toBe(30);
    // a row first touched now: its step depends on the table's count alone
    const late = { rows: [9], g: Float32Array.from([1, 2, 3, 4]) };
    c.applyPush(pushOf(30, late), Date.now());
    restored.applyPush(pushOf(30, late), Date.now());
    expect(Array.from(read(restored))).toEqual(Array.from(read(c)));
  });
});
