import { describe, expect, it } from 'vitest';
import { decodeFrame, encodeFrame } from '../src/frame.js';
import { halfBits, halfValue } from '../src/half.js';
import { decodePush, encodePush, halfPushRoundTrip, type PushRequest } from '../src/ps-messages.js';

/**
 * Pushes whose embedding gradients go as binary16 (worker option `halfPush`): scaled by a power
 * of two so that batch-mean gradients far below binary16's normal range keep their precision.
 */
function push(grads: Float32Array, half: boolean): PushRequest {
  const n = grads.length / 4;
  return {
    id: 'p',
    worker: 'w',
    clock: 0,
    base: 0,
    tables: [
      { t: 0, dim: 4, keys: new Uint32Array(2 * n).fill(7), grads, counts: new Uint32Array(n).fill(1), half },
    ],
  };
}

describe('binary16 pushes', () => {
  it('encode again to the same bits once decoded (a shard re-encodes a push it completed)', () => {
    for (const magnitude of [1e-9, 2e-5, 3, 5e6]) {
      const g = Float32Array.from({ length: 64 }, (_, i) => Math.cos(i * 0.9) * magnitude);
      const wire = encodePush(push(g, true));
      const decoded = decodePush(wire);
      expect(decoded.tables[0]!.half).toBe(true);
      expect(Buffer.from(encodePush(decoded)).equals(Buffer.from(wire))).toBe(true);
      // the bits as they came are kept; encoding the decoded values again gives them too
      const { halfBits, ...values } = decoded.tables[0]!;
      expect(halfBits).toBeDefined();
      expect(Buffer.from(encodePush({ ...decoded, tables: [values] })).equals(Buffer.from(wire))).toBe(true);
      expect(decodePush(encodePush(push(g, false))).tables[0]!.half).toBeUndefined();
      // what a sender keeps for error feedback is what the shard decodes, bit for bit
      expect(Array.from(halfPushRoundTrip(g))).toEqual(Array.from(decoded.tables[0]!.grads));
    }
  });

  it('keep every gradient within binary16 precision, tiny ones too, in half the bytes', () => {
    for (const magnitude of [1e-9, 3e-7, 2e-5, 0.01, 3, 5e6]) {
      const g = Float32Array.from(
        { length: 400 },
        (_, i) => Math.sin(i * 1.7) * magnitude * (i % 7 === 0 ? 0 : 1),
      );
      const half = encodePush(push(g, true));
      const full = encodePush(push(g, false));
      expect(half.byteLength).toBeLessThan(full.byteLength * 0.8);
      const got = decodePush(half).tables[0]!.grads;
      const max = Math.max(...g.map(Math.abs));
      for (let i = 0; i < g.length; i++) {
        // relative to the table's largest value: 11 significant bits at its scale
        expect(Math.abs(got[i]! - g[i]!)).toBeLessThanOrEqual(max * 2 ** -11);
        if (g[i] === 0) expect(got[i] === 0).toBe(true);
      }
      const e = (decodeFrame(half).header as { tables: { e?: number }[] }).tables[0]!.e;
      expect(Math.abs(max * 2 ** (e ?? 0))).toBeGreaterThanOrEqual(2 ** 14);
      expect(Math.abs(max * 2 ** (e ?? 0))).toBeLessThan(2 ** 15);
    }
    // the scale is what keeps them: unscaled, 1e-9 is a binary16 zero
    expect(halfValue(halfBits(1e-9))).toBe(0);
  });

  it('leaves float32 pushes as they were, and refuses a scale on float32 gradients', () => {
    const g = Float32Array.from([1e-9, -2, 3.5, 0]);
    const full = encodePush(push(g, false));
    expect(decodeFrame(full).header).not.toHaveProperty('tables.0.e');
    expect([...decodePush(full).tables[0]!.grads]).toEqual([...g]);
    const f = decodeFrame(full);
    const h = f.header as { tables: Record<string, unknown>[] };
    h.tables[0]!.e = 3;
    expect(() => decodePush(encodeFrame(h, f.arrays))).toThrow(/scale on float32/);
  });

  it('keeps NaN non-finite, so the shard still refuses it', () => {
    const g = Float32Array.from([Number.NaN, 1e-3, 0, 2e-3]);
    expect(Number.isNaN(decodePush(encodePush(push(g, true))).tables[0]!.grads[0])).toBe(true);
  });
});
