import { describe, expect, it } from 'vitest';
import {
  decodeHostReply,
  decodeHostRequest,
  decodePull,
  decodePushReply,
  encodeErrorReply,
  encodeFrame,
  encodeHostReply,
  encodeHostRequest,
  encodePull,
  encodePushReply,
  type FreshetError,
} from '../src/index.js';

const pull = (k: number) =>
  encodePull({ worker: 'w', tables: [{ t: 0, keys: Uint32Array.of(k, 0, k + 1, 0) }] });

describe('host messages', () => {
  it('carry each shard its own request frame, byte for byte and aligned, in order', () => {
    const parts = [
      { shard: 3, frame: pull(10) },
      { shard: 1, frame: pull(20) },
      { shard: 3, frame: pull(30) },
    ];
    const wire = encodeHostRequest({ op: 'pull', parts });
    // as NATS may hand it over: at an odd offset inside a bigger buffer
    const odd = new Uint8Array(wire.byteLength + 3);
    odd.set(wire, 3);
    const got = decodeHostRequest(odd.subarray(3));
    expect(got.op).toBe('pull');
    expect(got.parts.map((p) => p.shard)).toEqual([3, 1, 3]);
    got.parts.forEach((p, i) => {
      expect(p.frame.byteOffset % 4).toBe(0);
      expect([...p.frame]).toEqual([...parts[i]!.frame]);
    });
    expect([...decodePull(got.parts[2]!.frame).tables[0]!.keys]).toEqual([30, 0, 31, 0]);
  });

  it("return each shard's reply (an error envelope stays the shard's error) and say which shards are not there", () => {
    const ok = encodePushReply({ version: 7, staleness: 1, applied: 2, duplicate: false });
    const err = encodeErrorReply({ code: 'STALE', message: 'too stale', retryable: false });
    const got = decodeHostReply(encodeHostReply([ok, undefined, err]), 3);
    expect(got[1]).toBeUndefined();
    expect(decodePushReply(got[0]!)).toMatchObject({ version: 7, applied: 2 });
    expect(() => decodePushReply(got[2]!)).toThrow(expect.objectContaining({ code: 'STALE' }));
  });

  it('refuse malformed messages with a clear error', () => {
    const code = (f: () => unknown) => {
      const thrown: unknown[] = [];
      expect(() => {
        try {
          f();
        } catch (e) {
          thrown.push(e);
          throw e;
        }
      }).toThrow();
      return (thrown[0] as FreshetError).code;
    };
    const req = encodeHostRequest({ op: 'push', parts: [{ shard: 0, frame: pull(1) }] });
    expect(code(() => decodeHostReply(encodeHostReply([undefined, undefined]), 3))).toBe('BAD_FRAME');
    expect(code(() => decodeHostReply(req, 1))).toBe('BAD_FRAME');
    expect(
      code(() => decodeHostRequest(encodeFrame({ op: 'pull', shards: [0, 1] }, [new Int8Array(8)]))),
    ).toBe('BAD_FRAME');
    expect(
      code(() => decodeHostRequest(encodeFrame({ op: 'pull', shards: [0] }, [new Float32Array(2)]))),
    ).toBe('BAD_FRAME');
    expect(
      code(() => decodeHostRequest(encodeFrame({ op: 'snapshot', shards: [0] }, [new Int8Array(8)]))),
    ).toBe('BAD_REQUEST');
    expect(code(() => decodeHostRequest(encodeFrame({ op: 'pull', shards: [] }, [])))).toBe('BAD_REQUEST');
    expect(
      code(() => encodeHostRequest({ op: 'pull', parts: [{ shard: 0, frame: new Uint8Array(5) }] })),
    ).toBe('BAD_FRAME');
    // a host that failed the whole message: its error, not a parse failure
    expect(
      code(() =>
        decodeHostReply(encodeErrorReply({ code: 'OVERLOADED', message: 'busy', retryable: true }), 2),
      ),
    ).toBe('OVERLOADED');
  });
});
