import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Ajv } from 'ajv';
import { feedbackEventSchema } from '../src/index.js';

// The JSON Schema other languages validate events with must accept and reject exactly what the
// zod schema the workers use does. Each case is one object; a mismatch names the case.
const schema = JSON.parse(
  readFileSync(new URL('../schema/events-v1.schema.json', import.meta.url), 'utf8'),
) as Record<string, unknown>;
const validate = new Ajv({ allErrors: true, strict: true }).compile(schema);

const base = { id: 'e-1', ts: 1_732_900_000_000, user: 'u7' };
const r = { request: 'q-1', item: 'sku-9' };
const a = (n: number, c = 'x') => c.repeat(n);
const many = (n: number, v: (i: number) => unknown) =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, v(i)]));

const valid: Record<string, unknown> = {
  'impression, every field': {
    kind: 'impression',
    ...base,
    ...r,
    v: 1,
    position: 0,
    query: 'red shoes',
    features: { device: 'ios', price: 19.9, tags: ['sale', 'new'] },
    propensity: 0.25,
    meta: { dataset: 'obd', srcTs: 1, replayed: true },
  },
  'impression, bare': { kind: 'impression', ...base, ...r },
  click: { kind: 'click', ...base, ...r },
  conversion: { kind: 'conversion', ...base, ...r, value: 19.9 },
  'conversion, negative value': { kind: 'conversion', ...base, ...r, value: -3 },
  dwell: { kind: 'dwell', ...base, ...r, ms: 38_000 },
  'dwell, 7 days': { kind: 'dwell', ...base, ...r, ms: 7 * 24 * 3600 * 1000 },
  skip: { kind: 'skip', ...base, ...r },
  rating: { kind: 'rating', ...base, item: 'm-42', rating: 4.5 },
  'rating, with request and features': { kind: 'rating', ...base, ...r, rating: 10, features: { g: 'x' } },
  example: { kind: 'example', ...base, label: 1, weight: 1, features: { C1: '68fd1e64', I1: 3 } },
  'example, soft label, no weight, item': { kind: 'example', ...base, item: 'a', label: 0.3, features: {} },
  'ids of 128 chars': { kind: 'click', ...base, id: a(128), user: a(128), request: a(128), item: a(128) },
  '256 features': { kind: 'impression', ...base, ...r, features: many(256, (i) => i) },
  'feature key of 128 chars, value of 1024': {
    kind: 'impression',
    ...base,
    ...r,
    features: { [a(128)]: a(1024) },
  },
  'token list of 256': { kind: 'impression', ...base, ...r, features: { t: Array(256).fill('w') } },
  'empty token list and empty string': { kind: 'impression', ...base, ...r, features: { t: [], s: '' } },
  '32 meta entries, key 64, value 256': {
    kind: 'click',
    ...base,
    ...r,
    meta: { ...many(31, () => 1), [a(64)]: a(256) },
  },
  'position 100000, integral float': { kind: 'impression', ...base, ...r, position: 100_000 },
  'propensity 0 and 1': { kind: 'impression', ...base, ...r, propensity: 1 },
  'an extra property is ignored': { kind: 'click', ...base, ...r, extra: { any: 'thing' } },
  'tiny positive ts': { kind: 'click', ...base, ...r, ts: 0.5 },
};

const invalid: Record<string, unknown> = {
  'not an object': 'click',
  array: [{ kind: 'click', ...base, ...r }],
  'no kind': { ...base, ...r },
  'unknown kind': { kind: 'purchase', ...base, ...r },
  'version 2': { kind: 'click', ...base, ...r, v: 2 },
  'version as a string': { kind: 'click', ...base, ...r, v: '1' },
  'empty id': { kind: 'click', ...base, ...r, id: '' },
  'id of 129 chars': { kind: 'click', ...base, ...r, id: a(129) },
  'numeric user': { kind: 'click', ...base, ...r, user: 7 },
  'no user': { kind: 'click', id: 'e', ts: 1, ...r },
  'ts zero': { kind: 'click', ...base, ...r, ts: 0 },
  'negative ts': { kind: 'click', ...base, ...r, ts: -1 },
  'ts as a string': { kind: 'click', ...base, ...r, ts: '1732900000000' },
  'click without request': { kind: 'click', ...base, item: 'sku' },
  'skip without item': { kind: 'skip', ...base, request: 'q' },
  'impression with empty item': { kind: 'impression', ...base, request: 'q', item: '' },
  'position -1': { kind: 'impression', ...base, ...r, position: -1 },
  'position 1.5': { kind: 'impression', ...base, ...r, position: 1.5 },
  'position over 100000': { kind: 'impression', ...base, ...r, position: 100_001 },
  'query of 1025 chars': { kind: 'impression', ...base, ...r, query: a(1025) },
  'propensity 1.5': { kind: 'impression', ...base, ...r, propensity: 1.5 },
  'rating 11': { kind: 'rating', ...base, item: 'm', rating: 11 },
  'rating without item': { kind: 'rating', ...base, rating: 3 },
  'rating as a string': { kind: 'rating', ...base, item: 'm', rating: '3' },
  'dwell without ms': { kind: 'dwell', ...base, ...r },
  'dwell over 7 days': { kind: 'dwell', ...base, ...r, ms: 7 * 24 * 3600 * 1000 + 1 },
  'negative dwell': { kind: 'dwell', ...base, ...r, ms: -1 },
  'conversion value as a string': { kind: 'conversion', ...base, ...r, value: '9' },
  'example without features': { kind: 'example', ...base, label: 1 },
  'example without label': { kind: 'example', ...base, features: {} },
  'label 2': { kind: 'example', ...base, label: 2, features: {} },
  'weight 1001': { kind: 'example', ...base, label: 1, weight: 1001, features: {} },
  '257 features': { kind: 'impression', ...base, ...r, features: many(257, (i) => i) },
  'empty feature name': { kind: 'impression', ...base, ...r, features: { '': 1 } },
  'feature name of 129 chars': { kind: 'impression', ...base, ...r, features: { [a(129)]: 1 } },
  'feature value of 1025 chars': { kind: 'impression', ...base, ...r, features: { s: a(1025) } },
  'token list of 257': { kind: 'impression', ...base, ...r, features: { t: Array(257).fill('w') } },
  'numbers in a token list': { kind: 'impression', ...base, ...r, features: { t: ['a', 1] } },
  'boolean feature': { kind: 'impression', ...base, ...r, features: { b: true } },
  'object feature': { kind: 'impression', ...base, ...r, features: { o: { a: 1 } } },
  'null feature': { kind: 'impression', ...base, ...r, features: { n: null } },
  'features as an array': { kind: 'impression', ...base, ...r, features: ['a'] },
  '33 meta entries': { kind: 'click', ...base, ...r, meta: many(33, () => 1) },
  'meta key of 65 chars': { kind: 'click', ...base, ...r, meta: { [a(65)]: 1 } },
  'meta value of 257 chars': { kind: 'click', ...base, ...r, meta: { k: a(257) } },
  'meta value an object': { kind: 'click', ...base, ...r, meta: { k: {} } },
  'meta value null': { kind: 'click', ...base, ...r, meta: { k: null } },
};

describe('events v1: JSON Schema and zod agree', () => {
  it('both accept every valid event', () => {
    const disagree = Object.entries(valid)
      .filter(([, e]) => !(feedbackEventSchema.safeParse(e).success && validate(e)))
      .map(
        ([name, e]) => `${name}: zod ${feedbackEventSchema.safeParse(e).success}, json-schema ${validate(e)}`,
      );
    expect(disagree).toEqual([]);
  });

  it('both reject every invalid event', () => {
    const disagree = Object.entries(invalid)
      .filter(([, e]) => feedbackEventSchema.safeParse(e).success || validate(e))
      .map(
        ([name, e]) => `${name}: zod ${feedbackEventSchema.safeParse(e).success}, json-schema ${validate(e)}`,
      );
    expect(disagree).toEqual([]);
  });

  it('names every event kind zod knows, and nothing else', () => {
    const kinds = (schema.oneOf as Array<{ properties: { kind: { const: string } } }>).map(
      (s) => s.properties.kind.const,
    );
    expect(kinds.sort()).toEqual(feedbackEventSchema.options.map((o) => o.shape.kind.value).sort());
  });
});
