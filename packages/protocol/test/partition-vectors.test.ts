import { describe, expect, it } from 'vitest';
import { hashString64, partitionOf } from '../src/index.js';

// The vectors published in packages/client/README.md for publishers in other languages. A change
// here moves users between partitions: every reimplementation would have to change with it.
const vectors: Array<[user: string, key: number, partitions: Record<number, number>]> = [
  ['u7', 0x4ae2d634, { 1: 0, 2: 0, 8: 7, 16: 8, 1000: 733, 65536: 9145 }],
  ['user-123456', 0x5c8adb19, { 1: 0, 2: 1, 8: 7, 16: 13, 1000: 435, 65536: 10783 }],
  ['alice@example.com', 0xef429015, { 1: 0, 2: 1, 8: 3, 16: 3, 1000: 395, 65536: 56881 }],
  ['ユーザー', 0x07660bf7, { 1: 0, 2: 0, 8: 4, 16: 13, 1000: 970, 65536: 37605 }],
  ['0', 0x6b517f17, { 1: 0, 2: 1, 8: 7, 16: 7, 1000: 507, 65536: 57583 }],
  ['a'.repeat(128), 0xb82502ac, { 1: 0, 2: 1, 8: 1, 16: 15, 1000: 763, 65536: 53625 }],
];

/** The README's step-by-step specification, written out independently of keys.ts. */
function specPartition(user: string, partitions: number): { key: number; partition: number } {
  let h = (0x811c9dc5 ^ 0x9747b28c) >>> 0;
  for (const b of new TextEncoder().encode(user)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h = (h ^ (h >>> 13)) >>> 0;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  if (partitions === 1) return { key: h, partition: 0 };
  let k = BigInt(h || 1);
  let b = -1n;
  let j = 0n;
  while (j < BigInt(partitions)) {
    b = j;
    k = (k * 1664525n + 1013904223n) & 0xffffffffn;
    j = ((b + 1n) << 24n) / ((k >> 8n) + 1n);
  }
  return { key: h, partition: Number(b) };
}

describe('partition hash test vectors', () => {
  it('partitionOf gives the published partitions and keys', () => {
    for (const [user, key, parts] of vectors) {
      const out = new Uint32Array(2);
      hashString64(user, out);
      expect(out[0], user).toBe(key);
      for (const [n, p] of Object.entries(parts))
        expect(partitionOf(user, Number(n)), `${user} / ${n}`).toBe(p);
    }
    // The vectors the README gave before these.
    expect([partitionOf('alice', 8), partitionOf('u42', 8), partitionOf('u42', 16)]).toEqual([6, 0, 12]);
  });

  it('the written specification (integer arithmetic only) agrees with partitionOf', () => {
    for (const [user, key, parts] of vectors) {
      for (const [n, p] of Object.entries(parts))
        expect(specPartition(user, Number(n))).toEqual({ key, partition: p });
    }
    for (let i = 0; i < 2000; i++) {
      const user = `user-${i * 7919}-${String.fromCodePoint(0x41 + (i % 26), 0x3042 + (i % 50))}`;
      const n = 1 + ((i * 37) % 3000);
      expect(specPartition(user, n).partition, `${user} / ${n}`).toBe(partitionOf(user, n));
    }
  });
});
