import { describe, expect, it } from 'vitest';
import { featureId, hasCode, parseModelSpec, type PushRequest } from '@freshet/protocol';
import type { ShardCore } from '../src/shard-core.js';
import { inProcessCore } from './in-process-core.js';

// The after-apply check: a push whose gradients are finite and below GRAD_OVERFLOW can still
// overflow float32 state (Adagrad's and FTRL's accumulators see the gradient times the push's
// example count, up to 2^24). Such a push is rolled back whole — weights, optimizer state and
// row metadata of every touched row, rows it created, the table's step, the delta staging —
// rejected with NON_FINITE_STATE, and the rows keep learning from later pushes.

const DIM = 4;
const DENSE = 8;
const EXAMPLES = 1 << 24;
const spec = (kind: 'ftrl' | 'adagrad') =>
  parseModelSpec({
    name: 'nfs',
    tables: [
      { name: 'bias', kind: 'dense', dim: DENSE, optimizer: { kind: 'adam', lr: 0.01 } },
      {
        name: 'emb',
        dim: DIM,
        optimizer: kind === 'ftrl' ? { kind: 'ftrl', alpha: 0.1 } : { kind: 'adagrad', lr: 0.1 },
        init: { kind: 'normal', std: 0.1 },
      },
    ],
  });

function keysOf(names: string[]): Uint32Array {
  const k = new Uint32Array(names.length * 2);
  names.forEach((n, i) => featureId('user', n, k, 2 * i));
  return k;
}
const users = (from: number, n: number) => Array.from({ length: n }, (_, i) => `u${from + i}`);

let ids = 0;
/** A push to both tables; `bad`: index of the sparse row whose gradient is huge (finite). */
function push(keys: Uint32Array, g: number, bad = -1, examples = 1): PushRequest {
  const n = keys.length / 2;
  const grads = new Float32Array(n * DIM).fill(g);
  if (bad >= 0) grads.fill(1e15, bad * DIM, (bad + 1) * DIM);
  return {
    id: `p${++ids}`,
    worker: 'w',
    clock: 0,
    base: 0,
    examples,
    tables: [
      {
        t: 0,
        dim: DENSE,
        keys: new Uint32Array(2),
        grads: new Float32Array(DENSE).fill(g),
        counts: Uint32Array.of(n),
      },
      { t: 1, dim: DIM, keys, grads, counts: new Uint32Array(n).fill(1) },
    ],
  };
}

/** Every word of a row (metadata, weights, optimizer state), or undefined when it does not exist. */
function words(c: ShardCore, t: number, lo: number, hi: number): number[] | undefined {
  const s = c.tables[t]!.store;
  const r = s.find(lo, hi);
  if (r < 0) return undefined;
  const o = s.offset(r);
  return [...s.chunkU(r).subarray(o, o + s.stride)];
}
function allWords(c: ShardCore, keys: Uint32Array) {
  const rows: (number[] | undefined)[] = [words(c, 0, 0, 0)];
  for (let i = 0; i < keys.length; i += 2) rows.push(words(c, 1, keys[i]!, keys[i + 1]!));
  return rows;
}
const rejectOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  return undefined;
};

describe.each(['ftrl', 'adagrad'] as const)('non-finite state after apply (%s)', (kind) => {
  it('rolls back every row of the push, rejects it with NON_FINITE_STATE, and the rows keep learning', () => {
    const c = inProcessCore(spec(kind));
    const old = keysOf(users(0, 40));
    c.applyPush(push(old, 0.01), 1_000);
    c.takeDelta(1 << 30);
    // some rows dirty (waiting for a delta) when the bad push comes, some not
    c.applyPush(push(keysOf(users(0, 10)), -0.02), 2_000);

    // 20 new rows and 40 existing ones; the huge gradient sits in the third block of 16, so
    // blocks 0 and 1 (every new row, some old ones) were applied and staged before it
    const mixed = keysOf([...users(100, 20), ...users(0, 40)]);
    const before = allWords(c, mixed);
    const version = c.version;
    const rows = c.rows;
    const steps = c.tables.map((t) => t.steps);
    const bad = push(mixed, 0.01, 45, EXAMPLES);
    const err = rejectOf(() => c.applyPush(bad, 3_000));
    expect(hasCode(err, 'NON_FINITE_STATE'), String(err)).toBe(true);
    expect(err!.message).toMatch(new RegExp(`${kind} state`));

    // nothing of it is left: not the dense part applied first, not the rows of block 0, not the
    // rows it created, not lastSeen, not the table's step
    expect(allWords(c, mixed)).toEqual(before);
    for (const w of before.slice(1, 21)) expect(w).toBeUndefined();
    expect(c.version).toBe(version);
    expect(c.rows).toBe(rows);
    expect(c.tables.map((t) => t.steps)).toEqual(steps);
    expect(c.appliedVersion(bad.id)).toBeUndefined();

    // the next delta carries no trace of it: exactly the rows dirtied before, at their values
    const d = c.takeDelta(1 << 30);
    const emb = d.tables.find((t) => t.t === 1)!;
    expect(emb.keys.length / 2).toBe(10);
    const sent = new Set<string>();
    for (let i = 0; i < emb.keys.length; i += 2) sent.add(`${emb.keys[i]}:${emb.keys[i + 1]}`);
    const dirty = keysOf(users(0, 10));
    for (let i = 0; i < dirty.length; i += 2) expect(sent.has(`${dirty[i]}:${dirty[i + 1]}`)).toBe(true);
    const pulled = c.pull({ tables: [{ t: 1, keys: emb.keys.slice() }] }).tables[0]!.values;
    expect([...emb.values]).toEqual([...pulled]);
    for (const x of emb.values) expect(Number.isFinite(x)).toBe(true);

    // the same rows keep learning, the poisoned one included, and the new ones are created now
    const w0 = c.pull({ tables: [{ t: 1, keys: mixed.slice() }] }).tables[0]!.values.slice();
    for (let k = 0; k < 20; k++) c.applyPush(push(mixed, 0.05, -1, 64), 4_000 + k);
    expect(c.version).toBe(version + 20);
    const w1 = c.pull({ tables: [{ t: 1, keys: mixed.slice() }] }).tables[0]!.values;
    for (let i = 0; i < w1.length; i++) {
      expect(Number.isFinite(w1[i]!)).toBe(true);
      expect(Math.abs(w1[i]! - w0[i]!), `weight ${i}`).toBeGreaterThan(1e-4);
    }
    for (const w of allWords(c, mixed)) expect(w).toBeDefined();
  });

  it('a shard that rejected pushes holds exactly the state of one that never saw them', () => {
    const a = inProcessCore(spec(kind));
    const b = inProcessCore(spec(kind));
    let seed = 7;
    const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296;
    const pool = users(0, 200);
    let rejected = 0;
    for (let k = 0; k < 60; k++) {
      const n = 1 + Math.floor(rand() * 50);
      const keys = keysOf(Array.from({ length: n }, () => pool[Math.floor(rand() * pool.length)]!));
      const g = (rand() - 0.5) * 0.2;
      if (k % 5 === 2) {
        const err = rejectOf(() => a.applyPush(push(keys, g, Math.floor(rand() * n), EXAMPLES), 10_000 + k));
        expect(hasCode(err, 'NON_FINITE_STATE'), String(err)).toBe(true);
        rejected++;
        continue;
      }
      const p = push(keys, g, -1, 1 + Math.floor(rand() * 32));
      a.applyPush(p, 10_000 + k);
      b.applyPush({ ...p }, 10_000 + k);
      if (k % 7 === 0) expect(a.takeDelta(1 << 30)).toEqual(b.takeDelta(1 << 30));
    }
    expect(rejected).toBe(12);
    const all = keysOf(pool);
    expect(allWords(a, all)).toEqual(allWords(b, all));
    expect(a.version).toBe(b.version);
    expect(a.rows).toBe(b.rows);
    expect(a.tables.map((t) => t.steps)).toEqual(b.tables.map((t) => t.steps));
    const da = a.takeDelta(1 << 30);
    const db = b.takeDelta(1 << 30);
    expect(da.tables.map((t) => t.keys.length)).toEqual(db.tables.map((t) => t.keys.length));
    for (const [i, t] of da.tables.entries()) {
      expect([...t.values]).toEqual([...db.tables[i]!.values]);
    }
  });
});
