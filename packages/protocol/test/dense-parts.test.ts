import { describe, expect, it } from 'vitest';
import {
  denseTensors,
  initRow,
  joinTensor,
  parseModelSpec,
  partition,
  splitTensor,
  type InitSpec,
} from '../src/index.js';

const part = (of: string, index: number, count: number, offset: number, dim: number) => ({
  name: `${of}.part${index}`,
  kind: 'dense' as const,
  dim,
  part: { of, index, count, offset },
});

describe('partitioned dense tensors', () => {
  it('partition cuts a tensor into even, nearly equal parts within the bound', () => {
    for (const [size, max] of [
      [54912, 1024],
      [8192, 1024],
      [1000, 64],
      [65, 64],
      [7, 64],
    ] as const) {
      const parts = partition(size, max);
      expect(parts.reduce((a, [, d]) => a + d, 0)).toBe(size);
      parts.forEach(([offset, dim], i) => {
        expect(dim).toBeLessThanOrEqual(max);
        expect(offset % 2).toBe(0);
        if (i > 0) expect(offset).toBe(parts[i - 1]![0] + parts[i - 1]![1]);
      });
      expect(parts.length).toBe(Math.ceil(size / max));
    }
  });

  it('a spec is refused unless its parts tile their tensor', () => {
    const sparse = { name: 'emb', dim: 4 };
    const ok = parseModelSpec({ name: 'm', tables: [sparse, part('w', 1, 2, 3, 5), part('w', 0, 2, 0, 3)] });
    expect(denseTensors(ok)).toEqual([{ name: 'w', size: 8, tables: [2, 1], offsets: [0, 3] }]);
    const bad = [
      [part('w', 0, 2, 0, 3)], // a part missing
      [part('w', 0, 2, 0, 3), part('w', 1, 2, 4, 5)], // a gap
      [part('w', 0, 2, 0, 3), part('w', 0, 2, 3, 5)], // a part twice
      [{ ...part('w', 0, 2, 0, 3), kind: 'sparse' as const }, part('w', 1, 2, 3, 5)],
      [{ name: 'w', kind: 'dense' as const, dim: 1 }, part('w', 0, 2, 0, 3), part('w', 1, 2, 3, 5)],
    ];
    for (const tables of bad) expect(() => parseModelSpec({ name: 'm', tables })).toThrow(/tensor|part/);
  });

  it('join and split are inverse, and split returns views', () => {
    const d = { name: 'w', size: 7, tables: [4, 2, 9], offsets: [0, 2, 5] };
    const whole = Float32Array.from({ length: 7 }, (_, i) => i + 1);
    const parts = splitTensor(d, whole);
    expect([...parts.keys()]).toEqual([4, 2, 9]);
    expect(Array.from(parts.get(9)!)).toEqual([6, 7]);
    expect(parts.get(2)!.buffer).toBe(whole.buffer);
    expect(joinTensor(d, (t) => parts.get(t)!)).toEqual(whole);
    expect(() => splitTensor(d, new Float32Array(6))).toThrow(/6 floats/);
  });

  it.each<Exclude<InitSpec, { kind: 'zeros' }>>([
    { kind: 'uniform', scale: 0.3, seed: 5 },
    { kind: 'normal', std: 0.1, seed: 9 },
  ])('a part initialised with skip holds its slice of the whole tensor’s init (%o)', (init) => {
    const whole = new Float32Array(41);
    initRow(init, 0, 0, whole);
    // even and odd starts: a normal part may begin on the second value of a Box–Muller pair
    for (const [at, dim] of [
      [0, 10],
      [10, 11],
      [21, 1],
      [22, 19],
      [7, 6],
    ] as const) {
      const out = new Float32Array(dim);
      initRow({ ...init, skip: at }, 0, 0, out);
      expect(Array.from(out)).toEqual(Array.from(whole.subarray(at, at + dim)));
    }
  });
});
