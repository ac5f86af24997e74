import { describe, expect, it } from 'vitest';
import { LogHistogram } from '../src/histogram.js';
import { RowTable } from '../src/row-table.js';

describe('RowTable', () => {
  it('matches a Map under random inserts, overwrites and deletes (growth and backward shift)', () => {
    const t = new RowTable(3, 0, 2);
    const ref = new Map<string, number>();
    let s = 12345;
    const rnd = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
    const v = new Float32Array(3);
    for (let i = 0; i < 20_000; i++) {
      // A small key space so deletes hit and probe runs collide.
      const lo = Math.floor(rnd() * 3000);
      const hi = lo % 7 === 0 ? 0xffffffff : lo * 31;
      const key = `${lo}:${hi >>> 0}`;
      if (rnd() < 0.35) {
        expect(t.delete(lo, hi)).toBe(ref.delete(key));
      } else {
        const x = i + 0.5;
        v.fill(x);
        t.upsert(lo, hi, v, 0);
        ref.set(key, x);
      }
    }
    expect(t.size).toBe(ref.size);
    const out = new Float32Array(3);
    for (const [key, x] of ref) {
      const [lo, hi] = key.split(':').map(Number) as [number, number];
      const row = t.rowOf(lo, hi);
      expect(row).toBeGreaterThanOrEqual(0);
      t.copyRow(row, out, 0);
      expect(Array.from(out)).toEqual([x, x, x]);
    }
    let seen = 0;
    t.forEach(() => seen++);
    expect(seen).toBe(ref.size);
    expect(t.rowOf(999_999, 1)).toBe(-1);
  });

  it('keeps an exponential moving average per row write', () => {
    const t = new RowTable(1, 0.9);
    t.upsert(1, 2, new Float32Array([10]), 0);
    t.upsert(1, 2, new Float32Array([0]), 0);
    const out = new Float32Array(1);
    t.copyRow(t.rowOf(1, 2), out, 0, true);
    expect(out[0]).toBeCloseTo(9, 5);
    t.copyRow(t.rowOf(1, 2), out, 0, false);
    expect(out[0]).toBe(0);
  });
});

describe('LogHistogram', () => {
  it('gives quantiles within one bucket (≤ 9%) and Prometheus buckets', () => {
    const h = new LogHistogram();
    for (let i = 1; i <= 1000; i++) h.record(i);
    expect(h.quantile(0.5)).toBeGreaterThanOrEqual(500);
    expect(h.quantile(0.5)).toBeLessThan(500 * 1.1);
    expect(h.quantile(0.99)).toBeGreaterThanOrEqual(990);
    expect(h.quantile(0.99)).toBeLessThanOrEqual(1000);
    const text = h.prometheus('x_ms', 'help');
    expect(text).toContain('x_ms_bucket{le="+Inf"} 1000');
    expect(text).toContain('x_ms_count 1000');
    expect(text).toMatch(/x_ms_bucket\{le="512"\} 512\n/);
  });
});
