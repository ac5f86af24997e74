import { xorshift32 } from './random.js';

/**
 * Embedding rows as int8 with one bfloat16 scale per row on the wire (pull replies and deltas;
 * push gradients, rounded stochastically): a row of dim d costs d + 2 bytes instead of 2d
 * (binary16) or 4d (float32). Each row is scaled by its own largest |v| / 127, rounded up to a
 * bfloat16 (float32's exponent range: rows of tiny values keep their precision, where a binary16
 * scale would go subnormal), so the error of a value is at most half a step of its row (≤ 0.4%
 * of the row's largest), or one step when rounded stochastically. Values do not accumulate the
 * rounding (the shard keeps float32); gradients, which the shard sums, are rounded
 * stochastically so each is right on average.
 *
 * Layout of one array per table: the n·d codes, row-major, then n little-endian bfloat16 scales.
 * Narrow rows gain little (a dim-1 row would cost 3 bytes against binary16's 2): senders use it
 * from {@link Q8_MIN_DIM} up.
 */
export const Q8_MIN_DIM = 4;

/** Whether a table of this width goes as int8 when int8 is asked for (narrower: binary16). */
export const q8Worthwhile = (dim: number) => dim >= Q8_MIN_DIM;

/** Bytes of n rows of dim d. */
export const q8Bytes = (n: number, dim: number) => n * dim + 2 * n;

const f = new Float32Array(1);
const u = new Uint32Array(f.buffer);
/** The bfloat16 at or above x ≥ 0 (so max / scale never passes 127). */
function bf16Up(x: number): number {
  f[0] = x;
  const b = u[0]!;
  const hi = b >>> 16;
  // a non-finite max stays non-finite (shards never hold one); otherwise round the magnitude up
  return (b & 0xffff) === 0 || (hi & 0x7f80) === 0x7f80 ? hi : hi + 1;
}
function bf16Value(h: number): number {
  u[0] = h << 16;
  return f[0]!;
}

/**
 * `rand`: stochastic rounding (each value rounds up with probability its fraction, `rand()` in
 * [0, 1)), so the codes are unbiased: what a sum of many rounded gradients needs, where
 * round-to-nearest would zero every value below half a step of its row, every time.
 */
export function toQ8(values: Float32Array, dim: number, rand?: () => number): Int8Array {
  const n = values.length / dim;
  const out = new Int8Array(q8Bytes(n, dim));
  const scales = new DataView(out.buffer, n * dim, 2 * n);
  for (let r = 0; r < n; r++) {
    const o = r * dim;
    let max = 0;
    for (let j = 0; j < dim; j++) {
      const a = Math.abs(values[o + j]!);
      if (a > max) max = a;
    }
    const bits = bf16Up(max / 127);
    scales.setUint16(2 * r, bits, true);
    const s = bf16Value(bits);
    if (!(s > 0) || !Number.isFinite(s)) continue; // an all-zero row stays zero
    const inv = 1 / s;
    if (rand) {
      for (let j = 0; j < dim; j++) {
        const x = Math.floor(values[o + j]! * inv + rand());
        out[o + j] = x > 127 ? 127 : x < -127 ? -127 : x;
      }
      continue;
    }
    for (let j = 0; j < dim; j++) {
      const x = values[o + j]! * inv;
      // The Int8Array store truncates toward zero, so ±0.5 rounds half away from zero; |x| ≤ 127
      // up to the multiply's rounding, and the clamp keeps 127.5 from wrapping to −128.
      out[o + j] = x >= 0 ? Math.min(127, x + 0.5) : Math.max(-127, x - 0.5);
    }
  }
  return out;
}

/**
 * A fast seeded generator in [0, 1) (xorshift32 of the seed's FNV-1a) for {@link toQ8}'s stochastic rounding: the
 * same seed gives the same codes, so a message encoded twice (a retry) is the same bytes.
 */
export function q8Rounding(seed: string): () => number {
  let h = 0x811c9dc5;
  for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 0x01000193);
  return xorshift32(h);
}

export function fromQ8(bytes: Int8Array, dim: number): Float32Array {
  const n = bytes.length / (dim + 2);
  const out = new Float32Array(n * dim);
  const scales = new DataView(bytes.buffer, bytes.byteOffset + n * dim, 2 * n);
  for (let r = 0; r < n; r++) {
    const s = bf16Value(scales.getUint16(2 * r, true));
    const o = r * dim;
    for (let j = 0; j < dim; j++) out[o + j] = bytes[o + j]! * s;
  }
  return out;
}
