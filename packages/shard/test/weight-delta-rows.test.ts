import { describe, expect, it } from 'vitest';
import { featureId, parseModelSpec, type PushRequest } from '@freshet/protocol';
import { ShardCore } from '../src/shard-core.js';

// A warm-start import (`freshet model import`) pushes embedding rows as weight deltas: the row
// must become its initial value plus the delta, be created even below the admission count the
// push carries, leave the optimizer state alone, and FTRL tables (weights follow z and n) and
// rows of the wrong width must be refused whole.

const DIM = 4;
const spec = parseModelSpec({
  name: 'rows',
  tables: [
    { name: 'emb', kind: 'sparse', dim: DIM, optimizer: { kind: 'adam', lr: 0.01 }, minCount: 3 },
    { name: 'ftrl', kind: 'sparse', dim: 1, optimizer: { kind: 'ftrl' } },
  ],
});
const core = () =>
  new ShardCore({
    spec,
    shard: 0,
    shards: 1,
    checkOwnership: false,
    maxPushRows: 1024,
    maxPullKeys: 1024,
    sketchWidth: 1024,
    recentPushIds: 64,
    dcMaxWorkers: 2,
    dcMaxRowsPerWorker: 64,
  });

const keys = new Uint32Array(4);
featureId('user', 'a', keys, 0);
featureId('user', 'b', keys, 2);

function add(t: number, dim: number, grads: Float32Array, counts = Uint32Array.of(3, 3)): PushRequest {
  return {
    id: `p${t}-${grads[0]}`,
    worker: 'import',
    clock: 0,
    base: 0,
    add: true,
    tables: [{ t, dim, keys, grads, counts }],
  };
}

describe('additive embedding rows', () => {
  it('add to the initial rows, admitted by the push count, optimizer state untouched', () => {
    const c = core();
    const before = c.pull({ tables: [{ t: 0, keys }] }).tables[0]!.values;
    const delta = Float32Array.from({ length: 2 * DIM }, (_, i) => (i + 1) / 8);
    const r = c.applyPush(add(0, DIM, delta), Date.now());
    expect(r.applied).toBe(2);
    const after = c.pull({ tables: [{ t: 0, keys }] }).tables[0]!.values;
    for (let i = 0; i < 2 * DIM; i++) expect(after[i]).toBe(Math.fround(before[i]! + delta[i]!));
    // Adam's moments stay zero: the table's step count did not move either
    expect(c.tables[0]!.steps).toBe(0);
    const changed = c.takeDelta(1 << 20).tables.find((t) => t.t === 0)!;
    expect(changed.keys.length / 2).toBe(2);
  });

  it('below the admission count, no row is created', () => {
    const c = core();
    c.applyPush(add(0, DIM, new Float32Array(2 * DIM).fill(1), Uint32Array.of(1, 1)), Date.now());
    expect(c.tables[0]!.store.size).toBe(0);
  });

  it('refuses FTRL tables and rows of the wrong width, applying nothing', () => {
    const c = core();
    expect(() => c.applyPush(add(1, 1, Float32Array.of(1, 1)), Date.now())).toThrow(
      /FTRL rows take no weight deltas/,
    );
    expect(() => c.applyPush(add(0, DIM - 1, new Float32Array(2 * (DIM - 1))), Date.now())).toThrow(
      expect.objectContaining({ code: 'WRONG_LENGTH' }),
    );
    expect(c.version).toBe(0);
    expect(c.rows).toBe(0);
  });
});
