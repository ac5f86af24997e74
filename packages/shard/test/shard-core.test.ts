import { describe, expect, it } from 'vitest';
import {
  type FreshetError,
  initRow,
  parseModelSpec,
  shardOfKey,
  type ModelSpecInput,
  type PushRequest,
} from '@freshet/protocol';
import { ShardCore } from '../src/shard-core.js';
import { SspGate, TauHistogram } from '../src/staleness.js';

function core(
  tables: ModelSpecInput['tables'],
  o: Partial<{ shard: number; shards: number; maxPushRows: number; sketchDecayMs: number }> = {},
) {
  return new ShardCore({
    spec: parseModelSpec({ name: 'm', tables }),
    shard: o.shard ?? 0,
    shards: o.shards ?? 1,
    checkOwnership: true,
    maxPushRows: o.maxPushRows ?? 1 << 20,
    maxPullKeys: 1 << 20,
    sketchWidth: 1 << 12,
    sketchDecayMs: o.sketchDecayMs,
    recentPushIds: 1000,
    dcMaxWorkers: 8,
    dcMaxRowsPerWorker: 1 << 16,
  });
}
let ids = 0;
function push(
  t: number,
  dim: number,
  keys: number[],
  g: number | number[],
  base = 0,
  worker = 'w',
): PushRequest {
  const n = keys.length / 2;
  const grads = Array.isArray(g) ? Float32Array.from(g) : new Float32Array(n * dim).fill(g);
  return {
    id: `p${++ids}`,
    worker,
    clock: 0,
    base,
    tables: [{ t, dim, keys: Uint32Array.from(keys), grads, counts: new Uint32Array(n).fill(1) }],
  };
}
const read = (c: ShardCore, t: number, keys: number[]) =>
  Array.from(c.pull({ tables: [{ t, keys: Uint32Array.from(keys) }] }).tables[0]!.values);
const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as FreshetError).code;
  }
  return 'none';
};

describe('ShardCore', () => {
  it('pulls missing rows as their deterministic init, applies pushes and bumps the version', () => {
    const c = core([
      { name: 'e', dim: 2, init: { kind: 'normal', std: 0.1, seed: 3 }, optimizer: { kind: 'sgd', lr: 1 } },
    ]);
    const init = new Float32Array(2);
    initRow({ kind: 'normal', std: 0.1, seed: 3 }, 5, 6, init);
    expect(read(c, 0, [5, 6])).toEqual(Array.from(init));
    const r = c.applyPush(push(0, 2, [5, 6], 0.5), Date.now());
    expect(r).toMatchObject({ version: 1, tau: 0, applied: 1 });
    expect(read(c, 0, [5, 6])).toEqual([init[0]! - 0.5, init[1]! - 0.5].map(Math.fround));
  });

  it('rejects a whole push on any invalid part and applies nothing of it', () => {
    const c = core([
      { name: 'a', dim: 2, optimizer: { kind: 'sgd', lr: 1 } },
      { name: 'd', kind: 'dense', dim: 3 },
    ]);
    const good = push(0, 2, [1, 1], 1);
    const withNaN: PushRequest = {
      ...good,
      id: 'bad',
      tables: [
        ...good.tables,
        {
          t: 0,
          dim: 2,
          keys: Uint32Array.from([2, 2]),
          grads: Float32Array.from([0, NaN]),
          counts: Uint32Array.from([1]),
        },
      ],
    };
    expect(code(() => c.applyPush(withNaN, 0))).toBe('NON_FINITE');
    expect(
      code(() =>
        c.applyPush(
          {
            ...withNaN,
            tables: [...good.tables, { ...good.tables[0]!, grads: Float32Array.from([1, Infinity]) }],
          },
          0,
        ),
      ),
    ).toBe('NON_FINITE');
    expect(
      code(() => c.applyPush({ ...good, tables: [...good.tables, { ...good.tables[0]!, t: 9 }] }, 0)),
    ).toBe('UNKNOWN_TABLE');
    expect(
      code(() =>
        c.applyPush(
          { ...good, tables: [...good.tables, { ...good.tables[0]!, dim: 3, grads: new Float32Array(3) }] },
          0,
        ),
      ),
    ).toBe('WRONG_LENGTH');
    expect(
      code(() =>
        c.applyPush(
          { ...good, tables: [...good.tables, { ...good.tables[0]!, grads: new Float32Array(5) }] },
          0,
        ),
      ),
    ).toBe('WRONG_LENGTH');
    expect(code(() => c.applyPush(push(1, 3, [0, 1], 1), 0))).toBe('BAD_REQUEST');
    expect(code(() => c.applyPush(push(1, 3, [0, 0, 0, 0], 1), 0))).toBe('WRONG_LENGTH');
    const small = core([{ name: 'a', dim: 2 }], { maxPushRows: 2 });
    expect(code(() => small.applyPush(push(0, 2, [1, 1, 2, 2, 3, 3], 1), 0))).toBe('OVERSIZE');
    // Nothing applied: version 0, row 1 untouched, no rows created.
    expect(c.version).toBe(0);
    expect(c.tables[0]!.store.size).toBe(0);
    expect(read(c, 0, [1, 1])).toEqual([0, 0]);
    // The dense table exists (owned by the only shard) and accepts key (0, 0).
    expect(c.applyPush(push(1, 3, [0, 0], 1), 0).applied).toBe(1);
  });

  it('rejects keys of another shard with NOT_OWNER', () => {
    const c = core([{ name: 'a', dim: 1 }], { shard: 0, shards: 4 });
    let foreign = 0;
    while (shardOfKey(0, foreign, 0, 4) === 0) foreign++;
    expect(code(() => c.applyPush(push(0, 1, [foreign, 0], 1), 0))).toBe('NOT_OWNER');
  });

  it('admits a row only after minCount sightings', () => {
    const c = core([
      { name: 'a', dim: 1, minCount: 3, optimizer: { kind: 'sgd', lr: 1 }, staleness: { policy: 'none' } },
    ]);
    expect(c.applyPush(push(0, 1, [7, 7], 1), 0).applied).toBe(0);
    expect(c.applyPush(push(0, 1, [7, 7], 1), 0).applied).toBe(0);
    expect(c.tables[0]!.store.size).toBe(0);
    expect(c.applyPush(push(0, 1, [7, 7], 1), 0).applied).toBe(1);
    expect(read(c, 0, [7, 7])).toEqual([-1]);
  });

  it('admission counts halve every sketchDecayMs: sightings long ago stop counting', () => {
    const spec = [
      {
        name: 'a',
        dim: 1,
        minCount: 3,
        optimizer: { kind: 'sgd' as const, lr: 1 },
        staleness: { policy: 'none' as const },
      },
    ];
    const t0 = Date.UTC(2025, 0, 1);
    const c = core(spec, { sketchDecayMs: 1000 });
    const never = core(spec, { sketchDecayMs: 0 });
    for (const x of [c, never]) {
      expect(x.applyPush(push(0, 1, [7, 7], 1), t0).applied).toBe(0);
      expect(x.applyPush(push(0, 1, [7, 7], 1), t0 + 100).applied).toBe(0);
    }
    // two periods later: 2 sightings halved twice are 0, so a third is not enough
    expect(never.applyPush(push(0, 1, [7, 7], 1), t0 + 2500).applied).toBe(1);
    expect(c.applyPush(push(0, 1, [7, 7], 1), t0 + 2500).applied).toBe(0);
    expect(c.tables[0]!.sketch!.halvings).toBe(2);
    expect(c.tables[0]!.sketch!.estimate(7, 7)).toBe(1);
    // within one period, minCount sightings admit as before
    expect(c.applyPush(push(0, 1, [7, 7], 1), t0 + 2600).applied).toBe(0);
    expect(c.applyPush(push(0, 1, [7, 7], 1), t0 + 2700).applied).toBe(1);
    expect(c.tables[0]!.sketch!.halvings).toBe(2);
  });

  it('evicts rows unseen for ttlMs and sends tombstones in the next delta', () => {
    const c = core([{ name: 'a', dim: 1, ttlMs: 1000 }]);
    const t0 = Date.UTC(2025, 0, 1);
    c.applyPush(push(0, 1, [1, 0, 2, 0], 1), t0);
    c.takeDelta(1 << 20);
    c.applyPush(push(0, 1, [2, 0], 1), t0 + 900);
    const exp = c.expired(t0 + 1500, 1 << 16);
    expect(exp).toHaveLength(1);
    expect(Array.from(exp[0]!.keys)).toEqual([1, 0]);
    c.evict(0, exp[0]!.keys);
    expect(c.evictions).toBe(1);
    const d = c.takeDelta(1 << 20);
    expect(Array.from(d.tables[0]!.deadKeys)).toEqual([1, 0]);
    expect(Array.from(d.tables[0]!.keys)).toEqual([2, 0]);
  });

  it('deltas carry each changed row once with its latest values, in budgeted pieces, never an evicted row', () => {
    const c = core([{ name: 'a', dim: 2, optimizer: { kind: 'sgd', lr: 1 }, staleness: { policy: 'none' } }]);
    const ks = (ids: number[]) => ids.flatMap((i) => [i, 0]);
    c.applyPush(push(0, 2, ks([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 1), 0);
    c.applyPush(push(0, 2, ks([1, 2, 3, 4, 5]), 0.5), 0);
    c.evict(0, Uint32Array.from([3, 0]));
    c.applyPush(push(0, 2, ks([11, 1]), 0.25), 0);
    const seen = new Map<number, number[]>();
    const dead: number[] = [];
    for (let guard = 0; c.hasChanges() && guard < 20; guard++) {
      const d = c.takeDelta(3 * 16); // 3 rows of dim 2 per piece
      for (const t of d.tables) {
        for (let i = 0; i < t.keys.length / 2; i++) {
          expect(seen.has(t.keys[2 * i]!)).toBe(false);
          seen.set(t.keys[2 * i]!, Array.from(t.values.subarray(2 * i, 2 * i + 2)));
        }
        dead.push(...Array.from(t.deadKeys).filter((_, i) => i % 2 === 0));
      }
    }
    expect(dead).toEqual([3]);
    expect([...seen.keys()].sort((a, b) => a - b)).toEqual([1, 2, 4, 5, 6, 7, 8, 9, 10, 11]);
    for (const [k, v] of seen) expect(v).toEqual(read(c, 0, [k, 0]));
  });

  it('a dense table pushed many times between deltas sends its latest values once', () => {
    const c = core([
      { name: 'w', kind: 'dense', dim: 3, optimizer: { kind: 'sgd', lr: 1 }, staleness: { policy: 'none' } },
    ]);
    const d0 = c.takeDelta(1 << 20);
    for (const g of [1, 0.5, 0.25]) c.applyPush(push(0, 3, [0, 0], g), 0);
    expect(c.hasChanges()).toBe(true);
    const d = c.takeDelta(1 << 20);
    expect(d.tables.map((t) => [t.t, t.keys.length / 2])).toEqual([[0, 1]]);
    expect(Array.from(d.tables[0]!.values)).toEqual(read(c, 0, [0, 0]));
    expect(read(c, 0, [0, 0])).toEqual([-1.75, -1.75, -1.75]);
    expect(c.hasChanges()).toBe(false);
    // nothing changed since: nothing to send (the first delta had the created row, if any)
    expect(d0.tables.every((t) => t.t === 0)).toBe(true);
    expect(c.takeDelta(1 << 20).tables).toEqual([]);
  });

  it('applies staleness policies: reject, scale, dc', () => {
    const c = core([
      { name: 'r', dim: 1, optimizer: { kind: 'sgd', lr: 1 }, staleness: { policy: 'reject', bound: 2 } },
      { name: 's', dim: 1, optimizer: { kind: 'sgd', lr: 1 }, staleness: { policy: 'scale', tolerance: 0 } },
      { name: 'd', dim: 1, optimizer: { kind: 'sgd', lr: 1 }, staleness: { policy: 'dc', lambda: 1 } },
      { name: 't', dim: 1, optimizer: { kind: 'sgd', lr: 1 }, staleness: { policy: 'scale', tolerance: 2 } },
    ]);
    for (let i = 0; i < 4; i++) c.applyPush(push(1, 1, [100 + i, 0], 0), 0);
    expect(c.version).toBe(4);
    expect(code(() => c.applyPush(push(0, 1, [1, 0], 1, 1), 0))).toBe('STALE');
    expect(c.applyPush(push(0, 1, [1, 0], 1, 2), 0).tau).toBe(2); // τ = 4 − 2 ≤ bound
    // scale: τ = version − base; lr/(1+τ)
    const v = c.version;
    c.applyPush(push(1, 1, [9, 0], 1, v - 3), 0);
    expect(read(c, 1, [9, 0])[0]).toBeCloseTo(-1 / 4, 6);
    // scale with a tolerance of 2: τ ≤ 2 keeps the rate, τ = 5 gets (1 + 2)/(1 + 5)
    c.applyPush(push(3, 1, [9, 0], 1, c.version - 2), 0);
    expect(read(c, 3, [9, 0])[0]).toBeCloseTo(-1, 6);
    c.applyPush(push(3, 1, [8, 0], 1, c.version - 5), 0);
    expect(read(c, 3, [8, 0])[0]).toBeCloseTo(-0.5, 6);
    // dc: worker pulled w_base = 0, w moved to −1 since; g + λ·g²·(w − w_base) = 2 + 4·(−1) = −2
    c.pull({ worker: 'x', tables: [{ t: 2, keys: Uint32Array.from([5, 0]) }] });
    const base = c.version;
    c.applyPush(push(2, 1, [5, 0], 1, base, 'y'), 0);
    c.applyPush(push(2, 1, [5, 0], 2, base, 'x'), 0);
    expect(read(c, 2, [5, 0])[0]).toBeCloseTo(-1 + 2, 6);
    expect(c.dc.compensated).toBe(1);
    expect(c.tau.count).toBeGreaterThan(0);
  });

  it('replays logged pushes (τ, DC-compensated gradients) to exactly the same state', () => {
    const tables: ModelSpecInput['tables'] = [
      { name: 's', dim: 2, optimizer: { kind: 'adam', lr: 0.1 }, staleness: { policy: 'scale' } },
      { name: 'd', dim: 2, optimizer: { kind: 'adagrad', lr: 0.1 }, staleness: { policy: 'dc', lambda: 2 } },
    ];
    const live = core(tables);
    const log: { req: PushRequest; tau: number; dcApplied: boolean }[] = [];
    const apply = (req: PushRequest) => {
      const r = live.applyPush(req, 0);
      log.push({ req: r.effective, tau: r.tau, dcApplied: r.dcApplied });
    };
    live.pull({ worker: 'a', tables: [{ t: 1, keys: Uint32Array.from([1, 0, 2, 0]) }] });
    apply(push(0, 2, [1, 0], [0.3, -0.2]));
    apply(push(1, 2, [1, 0, 2, 0], [0.5, 0.1, -0.4, 0.2], 0, 'b'));
    apply(push(1, 2, [1, 0, 2, 0], [0.2, 0.2, 0.3, -0.1], 0, 'a')); // τ = 2, compensated
    apply(push(0, 2, [1, 0], [0.1, 0.1], 1)); // τ = 2, lr / 3
    expect(live.dc.compensated).toBe(2);
    const replayed = core(tables);
    for (const e of log) replayed.applyPush(e.req, 0, { tau: e.tau, dcApplied: e.dcApplied });
    expect(replayed.version).toBe(live.version);
    for (const t of [0, 1]) expect(read(replayed, t, [1, 0, 2, 0])).toEqual(read(live, t, [1, 0, 2, 0]));
  });

  it('keeps τ quantiles', () => {
    const h = new TauHistogram();
    for (let i = 0; i < 100; i++) h.record(i < 98 ? 1 : 500);
    expect(h.quantile(0.5)).toBe(1);
    expect(h.quantile(0.99)).toBe(256);
  });

  it('SSP: a worker too far ahead waits for the slowest live worker, then times out', async () => {
    const g = new SspGate(60_000, 300);
    expect(g.admit('a', 0, 2)).toBeUndefined();
    const waiting = g.admit('b', 5, 2);
    expect(waiting).toBeInstanceOf(Promise);
    g.observe('a', 3);
    await expect(waiting).resolves.toBeUndefined();
    await expect(g.admit('b', 9, 2)).rejects.toMatchObject({ code: 'TIMEOUT' });
    expect(g.timeouts).toBe(1);
  });

  it('SSP: a worker joining at clock 0 is admitted at the current clock and stalls nobody', () => {
    let now = 0;
    const g = new SspGate(1000, 300, 1024, () => now);
    for (let c = 0; c <= 5000; c++) {
      expect(g.admit('a', c, 2)).toBeUndefined();
      expect(g.admit('b', c + 1, 2)).toBeUndefined();
    }
    // c joins at its clock 0: the others go on, and so does c
    expect(g.admit('c', 0, 2)).toBeUndefined();
    expect(g.joins).toBe(2); // b (its first pull came after a's) and c
    expect(g.admit('a', 5001, 2)).toBeUndefined();
    expect(g.admit('b', 5002, 2)).toBeUndefined();
    expect(g.admit('c', 1, 2)).toBeUndefined();
    // from there it is held to the bound like anyone: c now trails at 5000 + 1, a may not run ahead
    expect(g.slowest()).toBe(5001);
    expect(g.admit('a', 5004, 2)).toBeInstanceOf(Promise);
    g.observe('c', 3); // c's clock 3 is 5003 on the gate's scale
    expect(g.waiting).toBe(0);
    // pushes in flight arriving after the next pull step back a little: not a restart
    g.observe('c', 2);
    expect(g.joins).toBe(2);
    // b restarts under the same id (clock 0 again, long after its last batch): it goes on from
    // where it was instead of pinning the slowest clock to its old one
    expect(g.admit('b', 0, 2)).toBeUndefined();
    expect(g.joins).toBe(3);
    expect(g.admit('b', 1, 2)).toBeUndefined();
    expect(g.slowest()).toBe(5003);
    // one unseen for liveMs is gone; back, it joins again at the current clock
    now += 2000;
    expect(g.admit('c', 10, 2)).toBeUndefined();
    expect(g.slowest()).toBe(10);
    expect(g.admit('a', 11, 2)).toBeUndefined();
  });
});
