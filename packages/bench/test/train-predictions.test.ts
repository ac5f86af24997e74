import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDirs, writeCriteoFixture } from '@freshet/testkit';
import { exactAuc } from '@freshet/worker';
import { runTrainBench } from '../src/train-bench.js';

const dir = useTempDirs()('train-preds');
const criteo = writeCriteoFixture(dir, { rows: 1200, seed: 5 }).path;

describe('bench train --predictions / --window', () => {
  it('writes one progressive prediction per example in stream order, and window AUCs that agree with it', async () => {
    const predictions = join(dir, 'preds.csv');
    const r = await runTrainBench({
      data: `criteo:${criteo}`,
      batch: 64,
      lr: 0.003,
      threads: 1,
      torch: false,
      predictions,
      window: 400,
    });
    const rows = readFileSync(predictions, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(',').map(Number) as [number, number]);
    expect(rows).toHaveLength(1200);
    // labels in file order are the fixture's labels in file order
    const labels = readFileSync(criteo, 'utf8')
      .trim()
      .split('\n')
      .map((l) => Number(l.split('\t')[0]));
    expect(rows.map((x) => x[1])).toEqual(labels);
    for (const [p] of rows) expect(p).toBeGreaterThan(0);
    const auc = exactAuc(
      rows.map((x) => x[0]),
      labels,
    );
    expect(auc).toBeCloseTo(r.progressive_auc as number, 3);
    const windows = r.window_auc as number[];
    expect(windows).toHaveLength(3);
    expect(windows[2]).toBeCloseTo(
      exactAuc(
        rows.slice(800).map((x) => x[0]),
        labels.slice(800),
      ),
      3,
    );
  }, 120_000);
});
