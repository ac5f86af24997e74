import { xorshift32 } from '@freshet/protocol';

/** A seeded source of the draws the fixture generators need (xorshift32: same seed, same file). */
export class Draw {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = xorshift32(seed * 2654435761 + 1);
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** A standard normal (Box–Muller). */
  normal(): number {
    const u = Math.max(this.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  /** An index in [0, n) with Zipf-like weights (rank^-1.1), as real categorical logs have. */
  zipf(n: number): number {
    return Math.min(n - 1, Math.floor(Math.pow(n + 1, this.next()) - 1));
  }
  /** `hex` lowercase hex characters. */
  hex(chars: number): string {
    let s = '';
    while (s.length < chars) s += (this.int(0x10000) | 0x10000).toString(16).slice(1);
    return s.slice(0, chars);
  }
}

/** A stable 32-bit hex token for (field, value): hashed ids as the public logs publish them. */
export function hexToken(field: number, value: number, chars = 8): string {
  let h = (Math.imul(field + 1, 0x9e3779b1) ^ Math.imul(value + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  let s = h.toString(16).padStart(8, '0');
  while (s.length < chars) s += hexToken(field + 7, value + s.length, 8);
  return s.slice(0, chars);
}

export const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
