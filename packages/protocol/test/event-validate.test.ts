import { describe, expect, it } from 'vitest';
import { eventKinds, eventLimits, eventSchemaByKind, type EventKind } from '../src/events.js';
import { parseEvent } from '../src/event-parse.js';
import { validEvent } from '../src/event-validate.js';
import { xorshift32 } from '../src/random.js';

/**
 * The fast path against zod, on thousands of seeded events of every kind: valid ones, and each
 * broken in one of many ways. Wherever the fast path answers, zod must accept and return the
 * same event; and it must answer for (nearly) every valid event, or it buys nothing.
 */

type Raw = Record<string, unknown>;

function criteoFeatures(r: () => number): Raw {
  const f: Raw = {};
  for (let i = 1; i <= 13; i++) if (r() < 0.8) f[`I${i}`] = Math.floor(r() * 1000) - 2;
  for (let i = 1; i <= 26; i++) f[`C${i}`] = Math.floor(r() * 2 ** 32).toString(16);
  if (r() < 0.3) f.tags = ['a', 'b', 'c'].slice(0, Math.floor(r() * 4));
  return f;
}

/** A valid event of `kind`, with each optional field present or not. */
function validOf(kind: EventKind, r: () => number, i: number): Raw {
  const e: Raw = { kind, id: `e${i}`, ts: 1_700_000_000_000 + i, user: `u${i % 37}` };
  if (r() < 0.5) e.v = 1;
  if (r() < 0.3) e.meta = { src: 'replay', srcTs: 1_600_000_000_000, flag: true };
  const maybe = (k: string, v: unknown) => {
    if (r() < 0.5) e[k] = v;
  };
  switch (kind) {
    case 'impression':
      Object.assign(e, { request: `r${i}`, item: `i${i % 11}` });
      maybe('position', Math.floor(r() * 20));
      maybe('query', 'red shoes');
      maybe('features', criteoFeatures(r));
      maybe('propensity', r());
      break;
    case 'click':
    case 'skip':
      Object.assign(e, { request: `r${i}`, item: `i${i % 11}` });
      break;
    case 'conversion':
      Object.assign(e, { request: `r${i}`, item: `i${i % 11}` });
      maybe('value', r() * 100);
      break;
    case 'rating':
      Object.assign(e, { item: `i${i % 11}`, rating: Math.round(r() * 10) });
      maybe('request', `r${i}`);
      maybe('features', { genre: 'drama' });
      break;
    case 'dwell':
      Object.assign(e, { request: `r${i}`, item: `i${i % 11}`, ms: Math.floor(r() * 60_000) });
      break;
    case 'example':
      Object.assign(e, { label: r() < 0.3 ? 1 : 0, features: criteoFeatures(r) });
      maybe('item', `i${i % 11}`);
      maybe('weight', r() * 10);
      break;
  }
  if (r() < 0.2) e.extra = 'dropped';
  return e;
}

const long = (n: number) => 'x'.repeat(n);
const L = eventLimits;
/** Ways to break (or stretch) an event: each returns a changed copy. */
const mutations: [string, (e: Raw) => Raw][] = [
  ...['id', 'user', 'ts', 'request', 'item', 'label', 'features', 'rating', 'ms'].map(
    (k): [string, (e: Raw) => Raw] => [`no ${k}`, (e) => ({ ...e, [k]: undefined })],
  ),
  ...['id', 'user', 'request', 'item'].flatMap((k): [string, (e: Raw) => Raw][] => [
    [`empty ${k}`, (e) => ({ ...e, [k]: '' })],
    [`long ${k}`, (e) => ({ ...e, [k]: long(L.maxIdLength + 1) })],
    [`max ${k}`, (e) => ({ ...e, [k]: long(L.maxIdLength) })],
    [`number ${k}`, (e) => ({ ...e, [k]: 7 })],
  ]),
  ['ts 0', (e) => ({ ...e, ts: 0 })],
  ['ts -5', (e) => ({ ...e, ts: -5 })],
  ['ts string', (e) => ({ ...e, ts: '1700000000000' })],
  ['ts NaN', (e) => ({ ...e, ts: Number.NaN })],
  ['ts Infinity', (e) => ({ ...e, ts: Number.POSITIVE_INFINITY })],
  ['v 2', (e) => ({ ...e, v: 2 })],
  ['v "1"', (e) => ({ ...e, v: '1' })],
  ['position 1.5', (e) => ({ ...e, position: 1.5 })],
  ['position -1', (e) => ({ ...e, position: -1 })],
  ['position max', (e) => ({ ...e, position: 100_000 })],
  ['position over', (e) => ({ ...e, position: 100_001 })],
  ['propensity 1.1', (e) => ({ ...e, propensity: 1.1 })],
  ['propensity null', (e) => ({ ...e, propensity: null })],
  ['rating 11', (e) => ({ ...e, rating: 11 })],
  ['rating -0.1', (e) => ({ ...e, rating: -0.1 })],
  ['label 2', (e) => ({ ...e, label: 2 })],
  ['label true', (e) => ({ ...e, label: true })],
  ['weight 1001', (e) => ({ ...e, weight: 1001 })],
  ['weight 0', (e) => ({ ...e, weight: 0 })],
  ['ms week+1', (e) => ({ ...e, ms: 7 * 24 * 3600 * 1000 + 1 })],
  ['value Infinity', (e) => ({ ...e, value: Number.NEGATIVE_INFINITY })],
  ['query long', (e) => ({ ...e, query: long(L.maxStringLength + 1) })],
  ['query number', (e) => ({ ...e, query: 3 })],
  ['meta array', (e) => ({ ...e, meta: ['a'] })],
  ['meta null', (e) => ({ ...e, meta: null })],
  ['meta nested', (e) => ({ ...e, meta: { a: { b: 1 } } })],
  ['meta long value', (e) => ({ ...e, meta: { a: long(257) } })],
  ['meta key 65', (e) => ({ ...e, meta: { [long(65)]: 1 } })],
  ['meta empty key', (e) => ({ ...e, meta: { '': 1 } })],
  [
    'meta too many',
    (e) => ({
      ...e,
      meta: Object.fromEntries(Array.from({ length: L.maxMetaEntries + 1 }, (_, i) => [`m${i}`, i])),
    }),
  ],
  ['features array', (e) => ({ ...e, features: [1, 2] })],
  ['features null', (e) => ({ ...e, features: null })],
  ['feature key 0', (e) => ({ ...e, features: { '': 'a' } })],
  ['feature key 128', (e) => ({ ...e, features: { [long(128)]: 'a' } })],
  ['feature key 129', (e) => ({ ...e, features: { [long(129)]: 'a' } })],
  ['feature bool', (e) => ({ ...e, features: { a: true } })],
  ['feature null', (e) => ({ ...e, features: { a: null } })],
  ['feature object', (e) => ({ ...e, features: { a: { b: 'c' } } })],
  ['feature NaN', (e) => ({ ...e, features: { a: Number.NaN } })],
  ['feature long string', (e) => ({ ...e, features: { a: long(L.maxStringLength + 1) } })],
  ['tokens numbers', (e) => ({ ...e, features: { a: ['x', 2] } })],
  ['tokens too many', (e) => ({ ...e, features: { a: Array.from({ length: L.maxTokens + 1 }, () => 't') } })],
  ['tokens hole', (e) => ({ ...e, features: { a: [, 'b'] } })], // eslint-disable-line no-sparse-arrays
  [
    'features too many',
    (e) => ({
      ...e,
      features: Object.fromEntries(Array.from({ length: L.maxFeatures + 1 }, (_, i) => [`f${i}`, i])),
    }),
  ],
  [
    'features at the limit',
    (e) => ({
      ...e,
      features: Object.fromEntries(Array.from({ length: L.maxFeatures }, (_, i) => [`f${i}`, i])),
    }),
  ],
  ['features __proto__', (e) => ({ ...e, features: JSON.parse('{"__proto__": "x", "a": "b"}') as Raw })],
  ['features class instance', (e) => ({ ...e, features: new (class {})() })],
  ['features Map', (e) => ({ ...e, features: new Map([['a', 'b']]) })],
  ['kind unknown', (e) => ({ ...e, kind: 'purchase' })],
  ['kind number', (e) => ({ ...e, kind: 3 })],
  ['event array', () => [] as unknown as Raw],
  ['extra keys', (e) => ({ ...e, foo: { deep: [1] }, bar: null })],
];

describe('the fast event validator', () => {
  it('answers only what zod answers, with the same event, and for nearly every valid one', () => {
    const r = xorshift32(7);
    let valid = 0;
    let vouched = 0;
    let zodAccepted = 0;
    let fastAccepted = 0;
    for (let i = 0; i < 4000; i++) {
      const kind = eventKinds[i % eventKinds.length]!;
      const good = validOf(kind, r, i);
      const [, mutate] = mutations[Math.floor(r() * mutations.length)]!;
      for (const [e, isValid] of [
        [good, true],
        [mutate(structuredCloneSafe(good)), false],
      ] as const) {
        const typedKind = (e as Raw | undefined)?.kind;
        const zod =
          typeof typedKind === 'string' && typedKind in eventSchemaByKind
            ? eventSchemaByKind[typedKind as EventKind].safeParse(e)
            : { success: false as const };
        const fast = validEvent(e);
        if (isValid) {
          expect(zod.success).toBe(true);
          valid++;
          if (fast) vouched++;
        }
        if (zod.success) zodAccepted++;
        if (fast) {
          fastAccepted++;
          expect(zod.success, JSON.stringify(e).slice(0, 200)).toBe(true);
          expect(fast).toEqual(zod.success ? zod.data : undefined);
        }
      }
    }
    expect(valid).toBe(4000);
    // the fast path is really used
    expect(vouched / valid).toBeGreaterThanOrEqual(0.99);
    // and the mutations did produce events zod rejects, which the fast path left to it
    expect(zodAccepted).toBeLessThan(8000 - 1000);
    expect(fastAccepted).toBeLessThanOrEqual(zodAccepted);
  });

  it('keeps parseEvent results as zod words them: defaults, stripping, and rejections', () => {
    const now = 1_700_000_000_000;
    const bytes = (e: unknown) => new TextEncoder().encode(JSON.stringify(e));
    const ok = parseEvent(
      bytes({ kind: 'example', id: 'a', ts: now, user: 'u', label: 1, features: { C1: 'x' }, junk: 1 }),
      { now },
    );
    expect(ok).toEqual({
      ok: true,
      event: {
        v: 1,
        kind: 'example',
        id: 'a',
        ts: now,
        user: 'u',
        label: 1,
        weight: 1,
        features: { C1: 'x' },
      },
    });
    const bad = parseEvent(bytes({ kind: 'click', id: 'a', ts: now, user: 'u', request: 'r', item: '' }), {
      now,
    });
    expect(bad).toMatchObject({ ok: false, reason: 'MISSING_FIELD' });
    const range = parseEvent(bytes({ kind: 'rating', id: 'a', ts: now, user: 'u', item: 'i', rating: 12 }), {
      now,
    });
    expect(range).toMatchObject({ ok: false, reason: 'INVALID' });
  });
});

/** A copy that keeps what JSON would lose (NaN, Infinity) and what structuredClone rejects. */
function structuredCloneSafe(e: Raw): Raw {
  const out: Raw = {};
  for (const [k, v] of Object.entries(e))
    out[k] = v !== null && typeof v === 'object' && !Array.isArray(v) ? { ...(v as Raw) } : v;
  return out;
}
