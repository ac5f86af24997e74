import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { useTempDirs, writeCriteoFixture } from '@freshet/testkit';
import {
  compileModelConfig,
  createModel,
  criteoDeepFmConfig,
  criteoPeerWideDeepConfig,
  criteoWideDeepConfig,
  parseCriteoLine,
} from '../src/index.js';

const fx = writeCriteoFixture(useTempDirs()('criteo'), { rows: 200, seed: 3 });
const sample = fx.path;

describe('criteo helpers', () => {
  it('parse a Criteo TSV: 40 columns, missing integers absent, empty categoricals kept', () => {
    const lines = readFileSync(sample, 'utf8').split('\n').slice(0, 200).filter(Boolean);
    const examples = lines.map(parseCriteoLine);
    expect(examples.every((e) => e !== undefined)).toBe(true);
    examples.forEach((e, r) => {
      const row = fx.rows[r]!;
      expect(e!.label).toBe(row.label);
      row.ints.forEach((x, i) => expect(e!.features[`I${i + 1}`]).toBe(x === null ? undefined : x));
      row.cats.forEach((c, i) => expect(e!.features[`C${i + 1}`]).toBe(c));
    });
    // The fixture has both kinds of missing value, so the checks above cover them.
    expect(fx.rows.some((r) => r.ints[11] === null)).toBe(true);
    expect(fx.rows.some((r) => r.cats[21] === '')).toBe(true);
    expect(parseCriteoLine('1\t2\t3')).toBeUndefined();
    expect(parseCriteoLine(['x', ...lines[0]!.split('\t').slice(1)].join('\t'))).toBeUndefined();

    const model = createModel(criteoWideDeepConfig());
    const batch = model.encode(examples as NonNullable<(typeof examples)[number]>[]);
    expect(batch.numeric.length).toBe(200 * 13);
    // The peer hashes empty categoricals as values: no empty slot in the batch.
    expect(batch.sparse[0]!.index.every((k) => k >= 0)).toBe(true);
  });

  it('the DeepFM variant trains the wide and linear terms with Adagrad, the rest with Adam', () => {
    const model = createModel(criteoDeepFmConfig());
    const opt = Object.fromEntries(model.spec.tables.map((t) => [t.name, t.optimizer.kind]));
    expect(opt).toMatchObject({ emb: 'adam', wide: 'adagrad', lin: 'adagrad', 'mlp.0.w': 'adam' });
  });

  it('wide-deep trains its wide table with Adagrad, the peer config uses Adam everywhere', () => {
    const opt = (cfg: Parameters<typeof createModel>[0]) =>
      Object.fromEntries(createModel(cfg).spec.tables.map((t) => [t.name, t.optimizer]));
    const ours = opt(criteoWideDeepConfig({ optimizer: { kind: 'adam', lr: 3e-3 } }));
    expect(ours.wide).toMatchObject({ kind: 'adagrad', lr: 0.05 });
    expect(ours.emb).toMatchObject({ kind: 'adam', lr: 3e-3 });
    expect(ours['mlp.2.b']).toMatchObject({ kind: 'adam', lr: 3e-3 });
    const peer = opt(criteoPeerWideDeepConfig());
    expect(Object.values(peer).every((o) => o.kind === 'adam')).toBe(true);
    // Same tables and shapes: only the wide table's optimizer differs.
    const a = createModel(criteoWideDeepConfig()).spec.tables.map((t) => [t.name, t.dim, t.init]);
    const b = createModel(criteoPeerWideDeepConfig()).spec.tables.map((t) => [t.name, t.dim, t.init]);
    expect(a).toEqual(b);
    // Kinds without a wide table still compile from the Criteo helper.
    expect(() => createModel(criteoWideDeepConfig({ kind: 'seed' }))).not.toThrow();
  });

  it('a config-level staleness policy reaches every table; per-table overrides win', () => {
    const { spec } = compileModelConfig(
      criteoWideDeepConfig({
        staleness: { policy: 'none' },
        tables: { emb: { staleness: { policy: 'reject', bound: 4 } } },
      }),
    );
    const pol = Object.fromEntries(spec.tables.map((t) => [t.name, t.staleness.policy]));
    expect(pol.emb).toBe('reject');
    expect(
      Object.entries(pol)
        .filter(([n]) => n !== 'emb')
        .every(([, p]) => p === 'none'),
    ).toBe(true);
    // Without it the shards' default applies.
    const plain = compileModelConfig(criteoWideDeepConfig()).spec;
    expect(plain.tables.every((t) => t.staleness.policy === 'scale')).toBe(true);
  });
});
