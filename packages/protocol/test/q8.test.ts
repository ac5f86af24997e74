import { describe, expect, it } from 'vitest';
import {
  decodeDelta,
  decodePush,
  encodePush,
  q8Rounding,
  type PushRequest,
  decodeFrame,
  decodePullReply,
  encodeDelta,
  encodeFrame,
  encodePullReply,
  fromQ8,
  halfBits,
  halfValue,
  q8Bytes,
  toQ8,
} from '../src/index.js';
import { i8 } from '../src/frame.js';

function rows(n: number, dim: number, seed: number): Float32Array {
  let x = seed;
  const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  // magnitudes from 1e-4 to 10 across rows: a per-row scale must follow each
  return Float32Array.from({ length: n * dim }, (_, i) => rnd() * 10 ** ((Math.floor(i / dim) % 6) - 4));
}
/** A row's step: its largest |v| / 127, at most 1/128 more once rounded up to a bfloat16. */
const stepOf = (row: ArrayLike<number>) => (Math.max(...Array.from(row, Math.abs)) / 127) * (1 + 2 ** -7);

describe('int8 rows with a scale per row', () => {
  it('keep every value within half a step of its row, in dim + 2 bytes a row', () => {
    const dim = 16;
    const v = rows(40, dim, 7);
    v.fill(0, 5 * dim, 6 * dim); // an all-zero row
    const q = toQ8(v, dim);
    expect(q.length).toBe(q8Bytes(40, dim));
    expect(q.length).toBe(40 * 18);
    const back = fromQ8(q, dim);
    for (let r = 0; r < 40; r++) {
      const row = v.subarray(r * dim, (r + 1) * dim);
      const step = stepOf(row);
      for (let j = 0; j < dim; j++) {
        // half a step, plus the scale's own binary16 rounding carried by the largest code
        expect(Math.abs(back[r * dim + j]! - row[j]!)).toBeLessThanOrEqual(
          step * 0.5 + Math.abs(row[j]!) * 2 ** -10,
        );
      }
    }
    expect(Array.from(back.subarray(5 * dim, 6 * dim))).toEqual(new Array(dim).fill(0));
    // not a copy of the input: values really were rounded
    expect(Array.from(back).some((b, i) => b !== v[i])).toBe(true);
  });

  it('travel in pull replies and deltas where asked, binary16 or float32 elsewhere', () => {
    const wide = rows(6, 8, 3);
    const narrow = rows(6, 1, 4);
    const reply = (q8: boolean) =>
      encodePullReply({
        version: 3,
        tables: [
          { t: 0, dim: 8, values: wide, q8 },
          { t: 1, dim: 1, values: narrow, half: true },
        ],
      });
    const plain = reply(false);
    const small = reply(true);
    // 6 rows of 8 float32 (192 B) against 6 × (8 + 2) int8 + scales (60 B, padded to 60)
    expect(plain.length - small.length).toBeGreaterThanOrEqual(192 - 64);
    const got = decodePullReply(small);
    expect(got.version).toBe(3);
    const back = got.tables[0]!.values;
    expect(Array.from(back)).toEqual(Array.from(fromQ8(toQ8(wide, 8), 8)));
    expect(Array.from(got.tables[1]!.values)).toEqual(Array.from(narrow, (x) => halfValue(halfBits(x))));

    const keys = Uint32Array.from({ length: 12 }, (_, i) => i);
    const delta = decodeDelta(
      encodeDelta({
        shard: 1,
        seq: 2,
        version: 3,
        ts: 4,
        eventTs: [],
        tables: [{ t: 0, dim: 8, keys, values: wide, deadKeys: Uint32Array.of(9, 9), q8: true }],
      }),
    );
    expect(Array.from(delta.tables[0]!.values)).toEqual(Array.from(back));
    expect(Array.from(delta.tables[0]!.deadKeys)).toEqual([9, 9]);
  });

  it('refuses a table whose int8 bytes do not match its rows', () => {
    const ok = encodePullReply({ version: 1, tables: [{ t: 0, dim: 4, values: rows(3, 4, 1), q8: true }] });
    const frame = decodeFrame(ok);
    const h = frame.header as { tables: { n: number }[] };
    h.tables[0]!.n = 4; // claims a row more than the bytes hold
    expect(() => decodePullReply(encodeFrame(h, frame.arrays))).toThrow(
      expect.objectContaining({ code: 'WRONG_LENGTH' }),
    );
  });

  it('frames i8 arrays padded to 4 bytes, so the arrays after them stay aligned', () => {
    const bytes = Int8Array.of(1, -2, 3, -4, 5);
    const after = Float32Array.of(1.5, -2.5);
    const f = decodeFrame(encodeFrame({}, [bytes, after]));
    expect(Array.from(i8(f, 0))).toEqual([1, -2, 3, -4, 5]);
    expect(Array.from(f.arrays[1] as Float32Array)).toEqual([1.5, -2.5]);
  });
});

describe('int8 push gradients (stochastic rounding)', () => {
  it('are unbiased: the mean over many roundings is the gradient, small values included', () => {
    const dim = 8;
    // one large value sets the row's step; the others sit at 0.3, 0.01 and 0.7 of a step
    const g = Float32Array.of(1, 0.3 / 127, 0.01 / 127, -0.7 / 127, 0.5, -0.25, 0, 1e-6);
    const rand = q8Rounding('push-1/0');
    const n = 20_000;
    const sum = new Float64Array(dim);
    for (let k = 0; k < n; k++) {
      const back = fromQ8(toQ8(g, dim, rand), dim);
      for (let j = 0; j < dim; j++) sum[j] = sum[j]! + back[j]!;
    }
    const step = stepOf(g);
    for (let j = 0; j < dim; j++) {
      // the standard error of a mean of n roundings is at most step / (2√n)
      expect(Math.abs(sum[j]! / n - g[j]!)).toBeLessThan((4 * step) / (2 * Math.sqrt(n)));
    }
    // rounding to nearest zeroes the sub-half-step values every time: the bias this avoids
    const nearest = fromQ8(toQ8(g, dim), dim);
    expect(nearest[1]).toBe(0);
    expect(nearest[2]).toBe(0);
    // each rounding is still within one step
    const once = fromQ8(toQ8(g, dim, q8Rounding('x')), dim);
    for (let j = 0; j < dim; j++) expect(Math.abs(once[j]! - g[j]!)).toBeLessThanOrEqual(step);
  });

  it('travel in pushes as int8, are the same bytes when encoded again, and re-encode as they came', () => {
    const dim = 16;
    const n = 30;
    const grads = rows(n, dim, 11);
    const req = (q8: boolean): PushRequest => ({
      id: 'b-7',
      worker: 'w',
      clock: 1,
      base: 0,
      session: 's.1',
      tables: [
        { t: 0, dim, keys: new Uint32Array(0), grads, counts: new Uint32Array(n).fill(1), q8, keyless: true },
      ],
    });
    const small = encodePush(req(true));
    const plain = encodePush(req(false));
    expect(plain.length - small.length).toBeGreaterThanOrEqual(n * dim * 4 - q8Bytes(n, dim) - 8);
    // seeded by the push id: a retry sends exactly the same bytes
    expect(Buffer.from(encodePush(req(true))).equals(Buffer.from(small))).toBe(true);
    const got = decodePush(small);
    const t = got.tables[0]!;
    expect(t.q8).toBe(true);
    for (let r = 0; r < n; r++) {
      const step = stepOf(grads.subarray(r * dim, (r + 1) * dim));
      for (let j = 0; j < dim; j++)
        expect(Math.abs(t.grads[r * dim + j]! - grads[r * dim + j]!)).toBeLessThanOrEqual(step);
    }
    // a shard that fills the keys in from the pull session logs what came, bit for bit
    const keys = Uint32Array.from({ length: 2 * n }, (_, i) => i + 1);
    const completed = encodePush({
      ...got,
      session: undefined,
      tables: [{ ...t, keys, keyless: undefined }],
    });
    const again = decodePush(completed).tables[0]!;
    expect(Array.from(again.grads)).toEqual(Array.from(t.grads));
    expect(Buffer.from(again.q8Codes!).equals(Buffer.from(t.q8Codes!))).toBe(true);
    expect(Array.from(again.keys)).toEqual(Array.from(keys));
  });
});
