import { describe, expect, it } from 'vitest';
import {
  decodePullReply,
  decodeFrame,
  encodeFrame,
  encodePullReply,
  f32,
  fromHalf,
  halfBits,
  halfValue,
  toHalf,
} from '../src/index.js';

describe('binary16', () => {
  it('round-trips every half value exactly and rounds float32 to the nearest half', () => {
    for (let h = 0; h < 65536; h++) {
      const v = halfValue(h);
      if (Number.isNaN(v)) {
        expect(Number.isNaN(halfValue(halfBits(v)))).toBe(true);
        continue;
      }
      if (!Number.isFinite(v)) continue; // ±Infinity clamps (below)
      expect(halfValue(halfBits(v))).toBe(v);
    }
    // known values
    expect(halfBits(1)).toBe(0x3c00);
    expect(halfBits(-2)).toBe(0xc000);
    expect(halfBits(65504)).toBe(0x7bff);
    expect(halfValue(0x0001)).toBe(2 ** -24);
    // ties to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10
    expect(halfBits(1 + 2 ** -11)).toBe(0x3c00);
    expect(halfBits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    // past the range: clamped, never Infinity
    expect(halfValue(halfBits(1e6))).toBe(65504);
    expect(halfValue(halfBits(-Infinity))).toBe(-65504);
    expect(halfBits(1e-9)).toBe(0);
  });

  it('is within half an ulp of random float32 values', () => {
    let x = 12345;
    for (let i = 0; i < 20000; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      const v = Math.fround(((x / 2 ** 32) * 2 - 1) * 2 ** ((i % 30) - 20));
      const back = halfValue(halfBits(v));
      const a = Math.abs(v);
      // spacing of halves around v: 2^(e-10) for normals, 2^-24 for subnormals
      const ulp = a < 2 ** -14 ? 2 ** -24 : 2 ** (Math.floor(Math.log2(a)) - 10);
      expect(Math.abs(back - v)).toBeLessThanOrEqual(ulp / 2 + 1e-30);
    }
    const src = Float32Array.of(0.5, -0.25, 3.14159, 1e-3);
    expect(Array.from(fromHalf(toHalf(src)))).toEqual(Array.from(src).map((v) => halfValue(halfBits(v))));
  });

  it('travels in frames as f16, padded to 4 bytes, and is read back by f32()', () => {
    const a = Float32Array.of(1, 2, 3); // 3 halves: 6 bytes + 2 padding
    const frame = encodeFrame({ x: 1 }, [toHalf(a), Uint32Array.of(7)]);
    const d = decodeFrame(frame);
    expect(Array.from(f32(d, 0))).toEqual([1, 2, 3]);
    expect(d.arrays[1]).toBeInstanceOf(Uint32Array);
    expect(Array.from(d.arrays[1]!)).toEqual([7]);
    // a truncated f16 array is a bad frame, not a short read
    expect(() => decodeFrame(frame.subarray(0, frame.length - 4))).toThrow(/overruns|trailing/);
  });

  it('halves a pull reply of embedding rows and keeps float32 tables as they are', () => {
    const rows = new Float32Array(64 * 9).map((_, i) => Math.sin(i) * 0.01);
    const dense = new Float32Array(100).map((_, i) => i / 7);
    const full = encodePullReply({
      version: 3,
      tables: [
        { t: 0, dim: 9, values: rows },
        { t: 1, dim: 100, values: dense },
      ],
    });
    const half = encodePullReply({
      version: 3,
      tables: [
        { t: 0, dim: 9, values: rows, half: true },
        { t: 1, dim: 100, values: dense },
      ],
    });
    expect(full.length - half.length).toBe(rows.length * 2);
    const back = decodePullReply(half);
    expect(Array.from(back.tables[1]!.values)).toEqual(Array.from(dense));
    for (let i = 0; i < rows.length; i++) {
      expect(Math.abs(back.tables[0]!.values[i]! - rows[i]!)).toBeLessThanOrEqual(
        Math.abs(rows[i]!) * 2 ** -11 + 2 ** -25,
      );
    }
  });
});
