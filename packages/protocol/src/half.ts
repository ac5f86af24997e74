/**
 * IEEE 754 half precision (binary16) for values on the wire: a pull reply's embedding rows in
 * half the bytes. Rounding is to nearest, ties to even; magnitudes past the largest half
 * (65504) are clamped to it rather than turned into Infinity, so a huge weight arrives huge,
 * never non-finite. NaN stays NaN. Node 20 has no Float16Array, so this is done by hand.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The binary16 bits of x. */
export function halfBits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 : sign | 0x7bff; // NaN; ±Inf clamps
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7bff; // past 65504: clamp
  if (e <= 0) {
    // subnormal half (or zero): shift the implicit 1 in, round to nearest even
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rest > mid || (rest === mid && (half & 1) === 1) ? 1 : 0));
  }
  const half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // a carry out of the mantissa bumps the exponent, which is the right answer; past 0x7bff clamp
  const rounded = half + (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1) ? 1 : 0);
  return sign | Math.min(rounded, 0x7bff);
}

/** The number that binary16 bits h stand for. */
export function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Float32 values → their binary16 bits. */
export function toHalf(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = halfBits(src[i]!);
  return out;
}

/** Every finite half value, indexed by its bits: decoding is one table lookup per value. */
let table: Float32Array | undefined;

/** binary16 bits → Float32 values. */
export function fromHalf(src: Uint16Array): Float32Array {
  if (!table) {
    table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) table[h] = halfValue(h);
  }
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  return out;
}
