import { describe, expect, it } from 'vitest';
import { apiSchemas, fastRequestCheck } from '../src/api-schemas.js';

const limits = { maxCandidates: 20 };
const schemas = apiSchemas(limits);
const check = fastRequestCheck(limits);

/** Deterministic xorshift, so a failure reproduces. */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

const str = (n: number) => 'x'.repeat(n);
/** Values that sit on either side of every limit the schemas set, and wrong types. */
const oddValues: unknown[] = [
  '',
  'a',
  str(128),
  str(129),
  str(1024),
  str(1025),
  0,
  1,
  1.5,
  -1,
  20,
  21,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  null,
  true,
  [],
  ['a', 'b'],
  [1],
  [str(1025)],
  Array.from({ length: 257 }, () => 'a'),
  {},
  { a: 'b' },
  { '': 1 },
  { [str(129)]: 1 },
  { a: { b: 1 } },
  { a: [1] },
  Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`f${i}`, 1])),
  JSON.parse('{"__proto__": "x"}') as unknown,
  JSON.parse('{"__proto__": ["x"]}') as unknown,
  undefined,
];

function validRequest(r: () => number): Record<string, unknown> {
  const n = 1 + Math.floor(r() * 5);
  return {
    user: `u${Math.floor(r() * 100)}`,
    context: { device: 'ios', hour: 13, query: ['red', 'shoes'] },
    candidates: Array.from({ length: n }, (_, i) =>
      r() < 0.5 ? { item: `i${i}` } : { item: `i${i}`, features: { price: 3.5, cat: 'k' } },
    ),
    ...(r() < 0.3 ? { requestId: 'req-1' } : {}),
  };
}

/** One random change somewhere in the request tree. */
function mutate(req: Record<string, unknown>, r: () => number): unknown {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const v = pick(oddValues);
  const c = structuredClone(req) as Record<string, unknown>;
  const cands = c.candidates as Record<string, unknown>[];
  switch (Math.floor(r() * 10)) {
    case 0:
      return v;
    case 1:
      c[pick(['user', 'context', 'candidates', 'requestId', 'k', 'extra'])] = v;
      return c;
    case 2:
      delete c[pick(['user', 'context', 'candidates', 'requestId'])];
      return c;
    case 3:
      cands[Math.floor(r() * cands.length)]![pick(['item', 'features', 'extra'])] = v;
      return c;
    case 4:
      delete cands[Math.floor(r() * cands.length)]!.item;
      return c;
    case 5:
      (c.context as Record<string, unknown>)[pick(['device', 'hour', 'new', ''])] = v;
      return c;
    case 6:
      c.candidates = Array.from({ length: pick([0, 1, 20, 21]) }, (_, i) => ({ item: `i${i}` }));
      return c;
    case 7:
      cands[0] = v as Record<string, unknown>;
      return c;
    case 8:
      c.k = pick([0, 1, 1.5, 20, 21, '3', null]);
      return c;
    default:
      // Parsed JSON, as requests arrive: own __proto__ keys survive parsing.
      return JSON.parse(JSON.stringify(c).replace('"user"', '"__proto__":{"user":"x"},"user"')) as unknown;
  }
}

describe('fastRequestCheck', () => {
  it('accepts the valid requests the schemas accept', () => {
    const r = rng(1);
    for (let i = 0; i < 500; i++) {
      const req = validRequest(r);
      expect(schemas.score.safeParse(req).success).toBe(true);
      expect(check(req, 'score')).toBe(true);
      expect(check({ ...req, k: 3 }, 'rank')).toBe(true);
      // k belongs to rank requests only.
      expect(check({ ...req, k: 3 }, 'score')).toBe(schemas.score.safeParse({ ...req, k: 3 }).success);
    }
  });

  it('never accepts what the zod schema rejects (fuzzed around every limit)', () => {
    const r = rng(2);
    let rejected = 0;
    let agreed = 0;
    for (let i = 0; i < 20_000; i++) {
      const x = mutate(validRequest(r), r);
      for (const op of ['score', 'rank'] as const) {
        const zodOk = schemas[op].safeParse(x).success;
        const fast = check(x, op);
        if (fast) expect({ op, x, zodOk }).toEqual({ op, x, zodOk: true });
        if (!zodOk) rejected++;
        if (fast === zodOk) agreed++;
      }
    }
    // The fuzzing reaches both verdicts, and the fast path decides most valid requests itself.
    expect(rejected).toBeGreaterThan(10_000);
    expect(agreed).toBeGreaterThan(38_000);
  });
});
