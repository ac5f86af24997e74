import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDirs, writeCriteoFixture, writeCsvFixture, writeMovieLensFixture } from '@freshet/testkit';
import { exactAuc } from '@freshet/worker';
import { loadBenchData } from '../src/bench-data.js';
import { runTrainBench } from '../src/train-bench.js';

const dir = useTempDirs()('train-data');
const csv = writeCsvFixture(dir, { rows: 300, seed: 2 });
const ml = writeMovieLensFixture(join(dir, 'ml'), { ratings: 1500, seed: 3 });
const criteo = writeCriteoFixture(dir, { rows: 300, seed: 6 }).path;

const readPredictions = (file: string) =>
  readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.split(',').map(Number) as [number, number]);

describe('bench train on every data ref replay reads', () => {
  it('csv with its spec: the spec’s columns are the model’s fields, one progressive prediction per row', async () => {
    const predictions = join(dir, 'csv-preds.csv');
    const r = await runTrainBench({
      data: `csv:${csv.path}`,
      spec: csv.specPath,
      model: 'fm',
      batch: 16,
      lr: 0.01,
      threads: 1,
      predictions,
      window: 100,
    });
    // user and item from the spec's user/item columns, `score` numeric, `title` a token list
    expect(r.fields).toEqual(['item:categorical', 'score:numeric', 'title:tokens', 'user:categorical']);
    const rows = readPredictions(predictions);
    // impression-click: each row is one impression, labelled 1 when `clicked`
    expect(rows).toHaveLength(csv.rows.length);
    expect(r.examples).toBe(csv.rows.length);
    const clicked = csv.rows.filter((x) => x.clicked === 1).length;
    expect(rows.filter(([, y]) => y === 1)).toHaveLength(clicked);
    // in event time order: the labels are the rows' labels sorted by timestamp (stable)
    const byTime = csv.rows
      .map((x, i) => ({ x, i }))
      .sort((a, b) => a.x.when - b.x.when || a.i - b.i)
      .map(({ x }) => x.clicked);
    expect(rows.map(([, y]) => y)).toEqual(byTime);
    expect(r.progressive_auc).toBeCloseTo(
      exactAuc(
        rows.map(([p]) => p),
        rows.map(([, y]) => y),
      ),
      3,
    );
    expect(r.window_auc as number[]).toHaveLength(3);
    // score is numeric: the FM peer takes categorical fields only, and says so
    expect(r.peer).toMatch(/^unavailable: .*score is numeric/);
  }, 30_000);

  it('movielens ratings become labelled examples (rating ≥ 4), and every model kind trains on them', async () => {
    const data = await loadBenchData(`movielens:${ml.dir}`);
    expect(data.examples).toHaveLength(ml.ratings.length);
    expect(data.examples.filter((e) => e.label === 1)).toHaveLength(
      ml.ratings.filter((x) => x.rating >= 4).length,
    );
    expect(data.fields.map((f) => `${f.name}:${f.kind}:${f.tower}`)).toEqual([
      'item:categorical:item',
      'user:categorical:user',
    ]);
    for (const model of ['lr', 'wide-deep', 'deepfm', 'two-tower', 'seed'] as const) {
      const r = await runTrainBench({
        data: `movielens:${ml.dir}`,
        model,
        seed: 1,
        batch: 64,
        lr: 0.01,
        threads: 1,
      });
      expect(r.examples, model).toBe(ml.ratings.length);
      expect(r.progressive_auc as number, model).toBeGreaterThan(0);
      // no PyTorch peer of these models on this data: said, never skipped silently
      expect(r.peer, model).toBe(
        `unavailable: no PyTorch peer of ${model} on movielens data (bench/peers/torch_online_fm.py is an FM)`,
      );
    }
  }, 30_000);

  it('an fm on categorical fields runs the exact FM peer on the same examples (or says why not)', async () => {
    const r = await runTrainBench({
      data: `movielens:${ml.dir}`,
      model: 'fm',
      batch: 32,
      lr: 0.01,
      threads: 1,
    });
    if (String(r.peer).startsWith('unavailable:')) {
      // only a missing Python or PyTorch may stop it here
      expect(r.peer).toMatch(/python|PyTorch/i);
      return;
    }
    expect(r.peer_exact).toBe(true);
    const torch = r.torch as { examples: number; progressive_auc_pass1: number };
    expect(torch.examples).toBe(ml.ratings.length);
    expect(typeof (r.vs_torch as { auc_delta: number }).auc_delta).toBe('number');
  }, 30_000);

  it('refuses models the data cannot carry, with CONFIG errors that say why', async () => {
    await expect(
      runTrainBench({ data: `criteo:${criteo}`, model: 'two-tower', torch: false }),
    ).rejects.toThrow(/two-tower needs fields of both towers/);
    await expect(
      runTrainBench({ data: `movielens:${ml.dir}`, model: 'wide-deep-peer', torch: false }),
    ).rejects.toThrow(/Criteo model/);
    await expect(runTrainBench({ data: `csv:${csv.path}`, torch: false })).rejects.toThrow(/needs a spec/);
  });

  it('a seeded synthetic stream: the fm learns it (later windows beat the first)', async () => {
    const r = await runTrainBench({
      data: 'synthetic:seed=3,requests=2000',
      model: 'fm',
      batch: 32,
      lr: 0.01,
      threads: 1,
      window: 2500,
      torch: false,
    });
    const w = r.window_auc as number[];
    expect(w).toHaveLength(4);
    expect(w[3]!).toBeGreaterThan(w[0]! + 0.03);
    expect(r.progressive_auc as number).toBeGreaterThan(0.55);
  }, 30_000);

  it('lr-ftrl is compared with per-example FTRL-Proximal, its exact reference (no PyTorch needed)', async () => {
    const r = await runTrainBench({
      data: 'synthetic:seed=4,requests=1500',
      model: 'lr-ftrl',
      batch: 128,
      threads: 1,
    });
    expect(r.peer).toMatch(/sequential FTRL/);
    expect(r.peer_exact).toBe(true);
    const ref = (r.torch as { progressive_auc_pass1: number }).progressive_auc_pass1;
    expect(ref).toBeGreaterThan(0.52); // it learned something
    // sequential FTRL on the workers is the reference, batch or not
    expect(Math.abs((r.progressive_auc as number) - ref)).toBeLessThanOrEqual(0.0002);
  }, 30_000);
});
