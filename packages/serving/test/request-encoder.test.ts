import { describe, expect, it } from 'vitest';
import { createModel, type EncodedBatch } from '@freshet/model';
import type { Candidate } from '../src/api-schemas.js';
import { RequestEncoder } from '../src/request-encoder.js';
import { requestExamples } from '../src/scorer.js';

const fields = { user: 'user', item: 'item' };
const model = createModel({
  kind: 'wide-deep',
  embeddingDim: 4,
  hidden: [8],
  features: {
    fields: [
      { kind: 'categorical', name: 'user' },
      { kind: 'categorical', name: 'item' },
      { kind: 'categorical', name: 'device' },
      { kind: 'categorical', name: 'cat' },
      { kind: 'tokens', name: 'query', maxTokens: 3 },
      { kind: 'numeric', name: 'hour' },
      { kind: 'numeric', name: 'price', transform: 'log1p' },
      { kind: 'numeric', name: 'age', buckets: [18, 30, 50], keepNumeric: true },
      { kind: 'cross', name: 'user_device', fields: ['user', 'device'] },
      { kind: 'cross', name: 'item_device', fields: ['item', 'device'] },
    ],
  },
} as never);

/** The id (lo:hi) in every slot of every example, or '' for an empty slot. */
function slotIds(b: EncodedBatch): string[] {
  const s = b.sparse[0]!;
  return Array.from(s.index, (r) => (r < 0 ? '' : `${s.keys[2 * r]}:${s.keys[2 * r + 1]}`));
}
function countsById(b: EncodedBatch): Map<string, number> {
  const s = b.sparse[0]!;
  return new Map(Array.from(s.counts, (c, r) => [`${s.keys[2 * r]}:${s.keys[2 * r + 1]}`, c]));
}

function expectSameEncoding(
  user: string,
  context: Record<string, string | number | string[]>,
  cands: Candidate[],
) {
  const full = model.encode(requestExamples(fields, user, context, cands));
  const fast = new RequestEncoder(model, fields).encode(user, context, cands);
  expect(fast.size).toBe(full.size);
  expect(slotIds(fast)).toEqual(slotIds(full));
  expect(Array.from(fast.sparse[0]!.slotWeights!)).toEqual(Array.from(full.sparse[0]!.slotWeights!));
  expect(Array.from(fast.numeric)).toEqual(Array.from(full.numeric));
  const keys = fast.sparse[0]!.keys;
  const ids = new Set(Array.from({ length: keys.length / 2 }, (_, r) => `${keys[2 * r]}:${keys[2 * r + 1]}`));
  expect(ids.size).toBe(keys.length / 2); // unique, and each one used by some slot
  expect(countsById(fast)).toEqual(countsById(full));
  expect(fast.sparse.map((s) => s.table)).toEqual(full.sparse.map((s) => s.table));
  expect(fast.denseTables).toEqual(full.denseTables);
  for (const s of fast.sparse) expect(s.keys).toBe(keys);
}

describe('RequestEncoder', () => {
  it('encodes a request exactly as the model encodes its per-candidate examples', () => {
    expectSameEncoding('u1', { device: 'ios', hour: 13, query: 'Red  shoes cheap extra', age: 41 }, [
      { item: 'a' },
      { item: 'b', features: { price: 3.5, cat: 'k1' } },
      { item: 'a', features: { cat: 'k2' } },
      { item: 'c', features: { price: 0 } },
    ]);
  });

  it('lets a candidate override context features, the user and the crosses built from them', () => {
    expectSameEncoding('u1', { device: 'ios', cat: 'shared', age: 20 }, [
      { item: 'a', features: { device: 'android' } },
      { item: 'b' },
      { item: 'c', features: { user: 'other', age: 60, query: ['x', 'y'] } },
      // `item` in features loses to the candidate's id, as in requestExamples.
      { item: 'd', features: { item: 'ignored' } },
    ]);
  });

  it('handles requests without context and a single candidate', () => {
    expectSameEncoding('u9', {}, [{ item: 'z' }]);
    expectSameEncoding('u9', { query: [] }, [{ item: 'z', features: { hour: 2 } }, { item: 'z' }]);
  });
});
