import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  BUCKET_ID_HI,
  bucketId,
  crc32,
  featureId,
  initRow,
  jumpHash,
  shardOfKey,
  subjects,
} from '../src/index.js';

describe('feature ids and routing', () => {
  it('salts ids by field and is deterministic', () => {
    const a = new Uint32Array(2);
    const b = new Uint32Array(2);
    const c = new Uint32Array(2);
    featureId('user', '42', a);
    featureId('item', '42', b);
    featureId('user', '42', c);
    expect(Array.from(a)).toEqual(Array.from(c));
    expect(Array.from(a)).not.toEqual(Array.from(b));
  });

  it("bucketId is Python's zlib.crc32 of field:value modulo the buckets (the PyTorch peer's hashing)", () => {
    // The standard CRC-32 check value.
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    const pairs = [
      ['C1', '68fd1e64'],
      ['C22', ''],
      ['query', 'été 😀'],
    ];
    const script =
      'import json, sys, zlib\n' +
      'print(json.dumps([zlib.crc32(f"{f}:{v}".encode()) & (2**20 - 1) for f, v in json.load(sys.stdin)]))';
    const py = JSON.parse(
      execFileSync('python3', ['-c', script], { input: JSON.stringify(pairs) }).toString(),
    ) as number[];
    const out = new Uint32Array(2);
    pairs.forEach(([f, v], i) => {
      bucketId(f!, v!, 2 ** 20, out);
      expect([out[0], out[1]]).toEqual([py[i], BUCKET_ID_HI]);
    });
    // Bucket 0 is still a sparse key, not the dense tables' (0, 0).
    bucketId('a', 'b', 2, out);
    expect(out[1]).not.toBe(0);
  });

  it('spreads keys evenly and moves ~1/(n+1) of them when a shard is added', () => {
    const n = 4;
    const counts = new Array<number>(n).fill(0);
    let moved = 0;
    const id = new Uint32Array(2);
    const N = 20000;
    for (let i = 0; i < N; i++) {
      featureId('f', String(i), id);
      const s = shardOfKey(0, id[0]!, id[1]!, n);
      counts[s]!++;
      if (shardOfKey(0, id[0]!, id[1]!, n + 1) !== s) moved++;
    }
    for (const c of counts) expect(Math.abs(c - N / n)).toBeLessThan(N / n / 10);
    expect(moved / N).toBeGreaterThan(0.15);
    expect(moved / N).toBeLessThan(0.25);
  });

  it('jumpHash stays in range', () => {
    for (let k = 0; k < 1000; k++) {
      const b = jumpHash(k * 2654435761, 7);
      expect(b).toBeGreaterThanOrEqual(0);
      expect(b).toBeLessThan(7);
    }
  });

  it('initRow is deterministic per key and has the requested scale', () => {
    const a = new Float32Array(4096);
    const b = new Float32Array(4096);
    initRow({ kind: 'normal', std: 0.01, seed: 1 }, 5, 6, a);
    initRow({ kind: 'normal', std: 0.01, seed: 1 }, 5, 6, b);
    expect(Array.from(a)).toEqual(Array.from(b));
    const sd = Math.sqrt(a.reduce((s, x) => s + x * x, 0) / a.length);
    expect(sd).toBeGreaterThan(0.009);
    expect(sd).toBeLessThan(0.011);
  });

  it('subjects reject names that would break subjects', () => {
    expect(subjects('demo-1').feedback(3)).toBe('freshet.demo-1.fb.3');
    expect(() => subjects('a.b')).toThrowError(/cluster name/);
  });
});
