import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  compileModelConfig,
  createModel,
  criteoDeepFmConfig,
  criteoPeerWideDeepConfig,
  criteoWideDeepConfig,
  parseCriteoLine,
} from '../src/index.js';

// Shared data lives next to the repository: ../shared/data from the repo root.
const sample = fileURLToPath(
  new URL('../../../../shared/data/criteo-kaggle-head10k/train_head10k.txt', import.meta.url),
);

describe('criteo helpers', () => {
  it('parse the real sample: 40 columns, missing integers absent, empty categoricals kept', () => {
    const lines = readFileSync(sample, 'utf8').split('\n').slice(0, 200).filter(Boolean);
    const examples = lines.map(parseCriteoLine);
    expect(examples.every((e) => e !== undefined)).toBe(true);
    const first = examples[0]!;
    expect(first.label).toBe(0);
    expect(first.features.I1).toBe(1);
    expect(first.features.I12).toBeUndefined();
    expect(first.features.C1).toBe('68fd1e64');
    expect(first.features.C22).toBe('');
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
    expect(ours.wide).toMatchObject({ kind: 'adagrad', lr: 0.2 });
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
