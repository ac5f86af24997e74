import { describe, expect, it } from 'vitest';
import { FreshetError, featureId, parseModelSpec, type PushRequest } from '@freshet/protocol';
import { ShardCore } from '@freshet/shard';
import type { WarmStartFile } from '../src/warm-start-file.js';
import { importWarmStart, type ShardLink } from '../src/warm-start-import.js';

// The import's protocol on in-process shards (the NATS path is test/warm-start.test.ts): rows go
// to their owners only, read back bit for bit, a lost reply retried is applied once, and rows a
// worker trains while the import runs keep that training.

const SHARDS = 2;
const DIM = 3;
const spec = parseModelSpec({
  name: 'imp',
  tables: [
    {
      name: 'emb',
      kind: 'sparse',
      dim: DIM,
      optimizer: { kind: 'adam', lr: 0.05 },
      // initial rows that are not 0: w + (v − w) then rounds, and the import must correct it
      init: { kind: 'normal', std: 0.3, seed: 1 },
    },
    { name: 'lin', kind: 'dense', dim: 2, optimizer: { kind: 'sgd', lr: 0.1 } },
  ],
});
const N = 200;
const keys = new Uint32Array(2 * N);
for (let i = 0; i < N; i++) featureId('item', `i${i}`, keys, 2 * i);
const values = Float32Array.from({ length: N * DIM }, (_, i) => Math.sin(i * 1.7) * 0.9);
const file = (): WarmStartFile => ({
  tables: new Map([
    ['emb', { kind: 'sparse', dim: DIM, keys, values }],
    ['lin', { kind: 'dense', values: Float32Array.of(0.3, -0.7) }],
  ]),
  metadata: {},
});

const cores = () =>
  Array.from(
    { length: SHARDS },
    (_, shard) =>
      new ShardCore({
        spec,
        shard,
        shards: SHARDS,
        checkOwnership: true,
        maxPushRows: 1 << 16,
        maxPullKeys: 1 << 16,
        sketchWidth: 1024,
        recentPushIds: 1024,
        dcMaxWorkers: 2,
        dcMaxRowsPerWorker: 64,
      }),
  );

/** A link to in-process shards; `beforePush` runs first (a worker's push, a lost reply). */
function link(cs: ShardCore[], beforePush?: (shard: number, req: PushRequest) => void): ShardLink {
  return {
    pull: (sh, req) => Promise.resolve(cs[sh]!.pull(req)),
    push: (sh, req) => {
      beforePush?.(sh, req);
      const v = cs[sh]!.appliedVersion(req.id);
      if (v !== undefined) return Promise.resolve({ version: v, staleness: 0, applied: 0, duplicate: true });
      const r = cs[sh]!.applyPush(req, Date.now());
      return Promise.resolve({ version: r.version, staleness: r.tau, applied: r.applied, duplicate: false });
    },
  };
}

function read(cs: ShardCore[], i: number): Float32Array {
  const k = keys.subarray(2 * i, 2 * i + 2);
  for (const c of cs) {
    try {
      return c.pull({ tables: [{ t: 0, keys: k }] }).tables[0]!.values;
    } catch (e) {
      if ((e as FreshetError).code !== 'NOT_OWNER') throw e;
    }
  }
  throw new Error('no owner');
}
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

describe('importWarmStart', () => {
  it('puts every row on its owner, bit for bit, in chunks', async () => {
    const cs = cores();
    const r = await importWarmStart(link(cs), spec, file(), 'import-t', { shards: SHARDS, chunkRows: 32 });
    expect(r).toMatchObject({ differing: 0, moved: 0, duplicates: 0 });
    expect(r.rounds).toBeGreaterThanOrEqual(2);
    for (let i = 0; i < N; i++)
      expect(bits(read(cs, i))).toEqual(bits(values.subarray(i * DIM, (i + 1) * DIM)));
    expect(cs.reduce((a, c) => a + c.rows, 0)).toBe(N + 1);
  });

  it('a reply lost after the shard applied: the retried import is answered duplicate, applied once', async () => {
    const cs = cores();
    let lost = false;
    const lossy = link(cs, (sh, req) => {
      if (!lost && req.id.includes('.r0.') && req.id.endsWith('.c1')) {
        lost = true;
        cs[sh]!.applyPush(req, Date.now());
        throw new FreshetError('TIMEOUT', 'reply lost');
      }
    });
    await expect(
      importWarmStart(lossy, spec, file(), 'import-t', { shards: SHARDS, chunkRows: 32 }),
    ).rejects.toThrow(/reply lost/);
    const r = await importWarmStart(link(cs), spec, file(), 'import-t', { shards: SHARDS, chunkRows: 32 });
    expect(r.differing).toBe(0);
    expect(r.duplicates).toBeGreaterThan(0);
    for (let i = 0; i < N; i++)
      expect(bits(read(cs, i))).toEqual(bits(values.subarray(i * DIM, (i + 1) * DIM)));
  });

  it('rows a worker trains during the import keep that training', async () => {
    const cs = cores();
    const victim = 5;
    const k = keys.subarray(2 * victim, 2 * victim + 2);
    let trained: Float32Array | undefined;
    const busy = link(cs, (_sh, req) => {
      // once the first round is done (a correction is being sent), a worker trains the victim
      if (trained || !req.id.includes('.r1.')) return;
      const sh = cs.findIndex((c) => {
        try {
          c.pull({ tables: [{ t: 0, keys: k }] });
          return true;
        } catch {
          return false;
        }
      });
      const before = read(cs, victim).slice();
      cs[sh]!.applyPush(
        {
          id: 'worker-1',
          worker: 'w',
          clock: 0,
          base: cs[sh]!.version,
          tables: [{ t: 0, dim: DIM, keys: k, grads: Float32Array.of(1, -1, 1), counts: Uint32Array.of(1) }],
        },
        Date.now(),
      );
      trained = Float32Array.from(read(cs, victim), (x, i) => x - before[i]!);
    });
    const r = await importWarmStart(busy, spec, file(), 'import-t', { shards: SHARDS, chunkRows: 32 });
    expect(trained).toBeDefined();
    expect(r.moved).toBe(1);
    expect(r.differing).toBe(0);
    const got = read(cs, victim);
    for (let d = 0; d < DIM; d++) {
      expect(Math.abs(trained![d]!)).toBeGreaterThan(1e-3);
      expect(got[d]).toBeCloseTo(values[victim * DIM + d]! + trained![d]!, 5);
    }
    for (let i = 0; i < N; i++)
      if (i !== victim) expect(bits(read(cs, i))).toEqual(bits(values.subarray(i * DIM, (i + 1) * DIM)));
  });
});
