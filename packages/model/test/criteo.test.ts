import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createModel, criteoDeepFmConfig, criteoWideDeepConfig, parseCriteoLine } from '../src/index.js';

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
});
