import { describe, expect, it } from 'vitest';
import {
  decodeSliceRows,
  decodeSliceRowsReply,
  encodeErrorReply,
  encodeFrame,
  encodeSliceRows,
  encodeSliceRowsReply,
  FreshetError,
} from '../src/index.js';

describe('slice rows messages', () => {
  it('round-trip a request and its reply', () => {
    const keys = Uint32Array.of(1, 2, 3, 4, 5, 6);
    const req = decodeSliceRows(
      encodeSliceRows({
        slice: { index: 1, count: 3 },
        tables: [
          { t: 2, keys },
          { t: 5, keys: new Uint32Array(0) },
        ],
      }),
    );
    expect(req.slice).toEqual({ index: 1, count: 3 });
    expect(req.tables.map((t) => t.t)).toEqual([2, 5]);
    expect(Array.from(req.tables[0]!.keys)).toEqual(Array.from(keys));
    expect(req.tables[1]!.keys.length).toBe(0);

    const values = Float32Array.from({ length: 12 }, (_, i) => i / 4);
    const reply = decodeSliceRowsReply(
      encodeSliceRowsReply({
        shards: [1, 4],
        versions: [7, 9],
        newestTs: 1234.5,
        node: 'serving-a',
        tables: [{ t: 2, dim: 4, values }],
      }),
    );
    expect(reply).toMatchObject({ shards: [1, 4], versions: [7, 9], newestTs: 1234.5, node: 'serving-a' });
    expect(reply.tables[0]!.dim).toBe(4);
    expect(Array.from(reply.tables[0]!.values)).toEqual(Array.from(values));
  });

  it('reject frames whose arrays disagree with their header', () => {
    const lying = encodeFrame({ op: 'rows', slice: { index: 0, count: 2 }, tables: [{ t: 0, n: 3 }] }, [
      Uint32Array.of(1, 2),
    ]);
    expect(() => decodeSliceRows(lying)).toThrow(expect.objectContaining({ code: 'WRONG_LENGTH' }));
    const noSlice = encodeFrame({ op: 'rows', tables: [] });
    expect(() => decodeSliceRows(noSlice)).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    const shortRows = encodeFrame(
      { shards: [0], versions: [1], newestTs: 0, node: 'n', tables: [{ t: 0, n: 2, dim: 4 }] },
      [new Float32Array(4)],
    );
    expect(() => decodeSliceRowsReply(shortRows)).toThrow(expect.objectContaining({ code: 'WRONG_LENGTH' }));
    const unpaired = encodeFrame({ shards: [0, 1], versions: [1], newestTs: 0, node: 'n', tables: [] });
    expect(() => decodeSliceRowsReply(unpaired)).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
  });

  it('turn an error reply back into the error the other slice sent', () => {
    const data = encodeErrorReply(new FreshetError('NOT_READY', 'slice still loading').toEnvelope());
    expect(() => decodeSliceRowsReply(data)).toThrow(
      expect.objectContaining({ code: 'NOT_READY', message: 'slice still loading' }),
    );
  });
});
