import { describe, expect, it } from 'vitest';
import {
  decodeFrame,
  decodePush,
  decodePullReply,
  encodeErrorReply,
  encodeFrame,
  encodePush,
  FreshetError,
} from '../src/index.js';

describe('tensor frames', () => {
  it('round-trips header and arrays with aligned zero-copy views', () => {
    const keys = new Uint32Array([1, 2, 3, 4]);
    const vals = new Float32Array([0.5, -1.25, 3]);
    const buf = encodeFrame({ a: 1, s: 'x' }, [keys, vals]);
    const f = decodeFrame(buf);
    expect(f.header).toEqual({ a: 1, s: 'x' });
    expect(Array.from(f.arrays[0]!)).toEqual([1, 2, 3, 4]);
    expect(Array.from(f.arrays[1]!)).toEqual([0.5, -1.25, 3]);
    expect(f.arrays[1]!.buffer).toBe(buf.buffer); // a view, not a copy
  });

  it('decodes from an unaligned offset by copying', () => {
    const buf = encodeFrame({}, [new Float32Array([7, 8])]);
    const host = new Uint8Array(buf.length + 1);
    host.set(buf, 1);
    const f = decodeFrame(host.subarray(1));
    expect(Array.from(f.arrays[0]!)).toEqual([7, 8]);
  });

  it.each([
    ['empty', new Uint8Array(0)],
    ['bad magic', new Uint8Array(16)],
    ['truncated', encodeFrame({}, [new Float32Array(8)]).subarray(0, 20)],
    [
      'trailing bytes',
      (() => {
        const b = encodeFrame({}, [new Float32Array(2)]);
        const c = new Uint8Array(b.length + 4);
        c.set(b);
        return c;
      })(),
    ],
  ])('rejects %s with BAD_FRAME', (_name, data) => {
    expect(() => decodeFrame(data)).toThrowError(expect.objectContaining({ code: 'BAD_FRAME' }) as Error);
  });

  it('push decoding checks lengths against the header', () => {
    const ok = encodePush({
      id: 'p1',
      worker: 'w',
      clock: 0,
      base: 3,
      tables: [
        { t: 0, dim: 2, keys: new Uint32Array(4), grads: new Float32Array(4), counts: new Uint32Array(2) },
      ],
    });
    expect(decodePush(ok).tables[0]!.grads.length).toBe(4);
    const bad = encodePush({
      id: 'p1',
      worker: 'w',
      clock: 0,
      base: 3,
      tables: [
        { t: 0, dim: 3, keys: new Uint32Array(4), grads: new Float32Array(4), counts: new Uint32Array(2) },
      ],
    });
    expect(() => decodePush(bad)).toThrowError(expect.objectContaining({ code: 'WRONG_LENGTH' }) as Error);
  });

  it('error replies come back as FreshetError with their code', () => {
    const data = encodeErrorReply({ code: 'STALE', message: 'too old', retryable: true });
    try {
      decodePullReply(data);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(FreshetError);
      expect((e as FreshetError).code).toBe('STALE');
      expect((e as FreshetError).retryable).toBe(true);
    }
  });
});
