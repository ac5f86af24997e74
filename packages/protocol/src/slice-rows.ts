import { z } from 'zod';
import { FreshetError } from './errors.js';
import { decodeFrame, encodeFrame, f32, u32 } from './frame.js';
import { count, expectArrays, header, tableId, wrongLength } from './frame-checks.js';
import { throwIfErrorReply } from './ps-messages.js';

/**
 * Sliced serving (serving option `slice`, packages/serving/README.md): a node that scores a request asks
 * the nodes holding each other slice for the rows of the request's keys that slice holds. Keys
 * are interleaved u32 pairs (keys.ts), rows row-major f32, as in a pull.
 */

const sliceSchema = z.object({ index: z.number().int().min(0), count: z.number().int().min(1).max(4096) });

export interface SliceId {
  index: number;
  count: number;
}

const rowsHeaderSchema = z.object({
  op: z.literal('rows'),
  /** The slice asked: a node holding another slice (or sliced otherwise) refuses. */
  slice: sliceSchema,
  tables: z.array(z.object({ t: tableId, n: count })).max(4096),
});

export interface SliceRowsRequest {
  slice: SliceId;
  tables: { t: number; keys: Uint32Array }[];
}

export function encodeSliceRows(r: SliceRowsRequest): Uint8Array {
  return encodeFrame(
    { op: 'rows', slice: r.slice, tables: r.tables.map((t) => ({ t: t.t, n: t.keys.length >>> 1 })) },
    r.tables.map((t) => t.keys),
  );
}

export function decodeSliceRows(data: Uint8Array): SliceRowsRequest {
  const frame = decodeFrame(data);
  const h = header(rowsHeaderSchema, frame);
  expectArrays(frame, h.tables.length);
  return {
    slice: h.slice,
    tables: h.tables.map((t, i) => {
      const keys = u32(frame, i);
      if (keys.length !== t.n * 2) wrongLength('slice rows keys', keys.length, t.n * 2);
      return { t: t.t, keys };
    }),
  };
}

const replyHeaderSchema = z.object({
  /** The shards of the slice and their versions, as the answering node holds them. */
  shards: z.array(z.number().int().min(0)).max(1 << 16),
  versions: z.array(z.number().int().min(0)).max(1 << 16),
  /** Emission time (ms since epoch) of the newest delta the slice applied; 0 when none. */
  newestTs: z.number().min(0),
  /** The answering node: a rank's response names every node whose rows it used. */
  node: z.string().max(128),
  tables: z.array(z.object({ t: tableId, n: count, dim: z.number().int().min(1) })).max(4096),
});

export interface SliceRowsReply {
  shards: number[];
  versions: number[];
  newestTs: number;
  node: string;
  /** In the request's order: n × dim values per table, in the order of its keys. */
  tables: { t: number; dim: number; values: Float32Array }[];
}

export function encodeSliceRowsReply(r: SliceRowsReply): Uint8Array {
  return encodeFrame(
    {
      shards: r.shards,
      versions: r.versions,
      newestTs: r.newestTs,
      node: r.node,
      tables: r.tables.map((t) => ({ t: t.t, n: t.values.length / t.dim, dim: t.dim })),
    },
    r.tables.map((t) => t.values),
  );
}

/** Decodes a reply; throws the FreshetError of an error reply. */
export function decodeSliceRowsReply(data: Uint8Array): SliceRowsReply {
  const frame = throwIfErrorReply(decodeFrame(data));
  const h = header(replyHeaderSchema, frame);
  if (h.shards.length !== h.versions.length)
    throw new FreshetError('BAD_REQUEST', `${h.shards.length} shards but ${h.versions.length} versions`);
  expectArrays(frame, h.tables.length);
  return {
    shards: h.shards,
    versions: h.versions,
    newestTs: h.newestTs,
    node: h.node,
    tables: h.tables.map((t, i) => {
      const values = f32(frame, i);
      if (values.length !== t.n * t.dim)
        throw new FreshetError(
          'WRONG_LENGTH',
          `slice rows: ${values.length} values, expected ${t.n * t.dim}`,
        );
      return { t: t.t, dim: t.dim, values };
    }),
  };
}
