import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  createModel,
  criteoPeerWideDeepConfig,
  criteoWideDeepConfig,
  initRows,
  parseCriteoLine,
  type Example,
} from '@freshet/model';
import { useTempDirs, writeCriteoFixture } from '@freshet/testkit';
import { peerInitGap, writePeerInit } from '../src/peer-init.js';
import { repoRoot } from '../src/repo-root.js';

const tempDir = useTempDirs();

function fixtureExamples(rows: number): Example[] {
  const fx = writeCriteoFixture(tempDir('peer-init-data'), { rows, seed: 5 });
  return readFileSync(fx.path, 'utf8')
    .split('\n')
    .map(parseCriteoLine)
    .filter((e): e is Example => e !== undefined);
}

const python = [process.env.FRESHET_PYTHON, '/usr/bin/python3', 'python3'].find(
  (p) => p !== undefined && (!p.startsWith('/') || existsSync(p)),
)!;

describe("the Criteo peer's shared initial weights", () => {
  it.each([
    ["the peer's model (2^20 hashed rows)", criteoPeerWideDeepConfig],
    ['a model on collision-free ids', criteoWideDeepConfig],
  ])(
    '%s: the rows and dense tensors a fresh cluster starts from, once per value, read back by freshet_init.py',
    async (_, make) => {
      const examples = fixtureExamples(40);
      // An empty categorical is a value of its own in the peer's model, and so here.
      examples[0]!.features.C3 = '';
      const config = make({ seed: 7, embeddingInit: { kind: 'normal', std: 0.01, seed: 7 } });
      const dir = tempDir('peer-init');
      const n = await writePeerInit(config, examples, dir);

      // What the shards would hand a worker for these examples: initRows of the encoded batch.
      const model = createModel(config);
      const batch = model.encode(examples);
      const fresh = initRows(model, batch);
      const emb = batch.sparse.find((s) => model.spec.tables[s.table]!.name === 'emb')!;
      const embRows = fresh[emb.table]!;
      // One row per value; values that share a bucket share a key (and so their initial row).
      if (config.features.hashBuckets) expect(n).toBeGreaterThanOrEqual(emb.keys.length / 2);
      else expect(n).toBe(emb.keys.length / 2);

      const out = JSON.parse(
        execFileSync(python, [join(repoRoot(), 'bench', 'peers', 'freshet_init.py'), dir], {
          maxBuffer: 64 << 20,
        }).toString(),
      ) as {
        emb_dim: number;
        keys: [string, string][];
        rows: number[][];
        mlp: { in: number; out: number; w_head: number[]; b: number[] }[];
      };
      expect(out.emb_dim).toBe(16);
      expect(out.keys).toHaveLength(n);
      expect(out.keys).toContainEqual(['C3', '']);
      // Each value's row, as Python reads it, is the row the encoder's key for that value gets.
      const byKey = new Map<string, number>();
      const keyed = model.encode(
        out.keys.map(([f, v]) => ({ features: { ...examples[0]!.features, [f]: v }, label: 0 })),
      );
      const keyedEmb = keyed.sparse.find((s) => s.table === emb.table)!;
      for (let i = 0; i < emb.keys.length / 2; i++) byKey.set(`${emb.keys[2 * i]}:${emb.keys[2 * i + 1]}`, i);
      out.keys.forEach(([field], i) => {
        // the slot of `field` in example i of `keyed` holds the row of out.keys[i]
        const slot = model.layout.features.sparse.find((f) => f.name === field)!.slot;
        const u = keyedEmb.index[i * keyedEmb.slots + slot]!;
        const at = byKey.get(`${keyedEmb.keys[2 * u]}:${keyedEmb.keys[2 * u + 1]}`);
        expect(at, `${out.keys[i]!.join('=')}`).toBeDefined();
        expect(out.rows[i]).toEqual(Array.from(embRows.subarray(at! * 16, at! * 16 + 16)));
      });
      // The MLP: PyTorch's shapes, and the values a fresh shard holds.
      expect(out.mlp.map((l) => [l.in, l.out])).toEqual([
        [429, 128],
        [128, 64],
        [64, 1],
      ]);
      model.layout.mlp.forEach((l, i) => {
        expect(out.mlp[i]!.w_head).toEqual(Array.from(fresh[l.w.tables[0]!]!.subarray(0, 4)));
        expect(out.mlp[i]!.b).toEqual(Array.from(fresh[l.b.tables[0]!]!));
      });
      // Another seed starts elsewhere.
      const other = tempDir('peer-init-other');
      await writePeerInit(criteoPeerWideDeepConfig({ seed: 8 }), examples, other);
      expect(readFileSync(join(other, 'init.json'), 'utf8')).not.toBe(
        readFileSync(join(dir, 'init.json'), 'utf8'),
      );
    },
  );

  it('are refused for a model the peer does not have', () => {
    expect(peerInitGap(criteoPeerWideDeepConfig())).toBeUndefined();
    expect(peerInitGap(criteoWideDeepConfig())).toBeUndefined();
    expect(peerInitGap(criteoWideDeepConfig({ kind: 'deepfm' }))).toMatch(/wide&deep, the model is deepfm/);
    expect(peerInitGap(criteoPeerWideDeepConfig({ hidden: [64] }))).toMatch(/128-64 MLP/);
    expect(peerInitGap(criteoPeerWideDeepConfig({ embeddingDim: 8 }))).toMatch(/dim-16/);
  });
});
