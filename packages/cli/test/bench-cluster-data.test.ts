import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadBenchData, mergeWorkerProgressive, runClusterBench } from '@freshet/bench';
import { useTempDirs, writeCsvFixture, writeMovieLensFixture } from '@freshet/testkit';
import { ProgressiveMetrics } from '@freshet/worker';
import { localClusterHarness } from '../src/bench-harness.js';

const dir = useTempDirs()('bench-data');
const ml = writeMovieLensFixture(join(dir, 'ml'), { ratings: 1200, seed: 8 });
const csv = writeCsvFixture(dir, { rows: 300, seed: 4 });

describe('bench cluster on any data ref, with several workers', () => {
  it('merges the workers’ score histograms into one AUC instead of averaging their AUCs', () => {
    // Each worker ranks its own examples perfectly, but b's scores all sit below a's.
    const a = new ProgressiveMetrics({ window: 100 });
    const b = new ProgressiveMetrics({ window: 100 });
    a.add(Array(10).fill(0.6).concat(Array(10).fill(0.9)), Array(10).fill(0).concat(Array(10).fill(1)));
    b.add(Array(10).fill(0.1).concat(Array(10).fill(0.4)), Array(10).fill(0).concat(Array(10).fill(1)));
    const status = (m: ProgressiveMetrics) => ({
      progressive: m.snapshot(),
      progressiveHistogram: m.mergeable(),
      progressiveWindowHistogram: m.windowMergeable(),
    });
    const m = mergeWorkerProgressive([status(a), status(b)]);
    expect(m.examples).toBe(40);
    // the mean of the two AUCs is 1; the pairs across workers make it 3 of 4 blocks
    expect(m.auc).toBeCloseTo(0.75, 6);
    expect(m.windowAuc).toBeCloseTo(0.75, 6);
    expect(m.windowExamples).toBe(40);
  });

  it('a real local cluster with two workers learns MovieLens ratings with an fm; one merged AUC', async () => {
    const data = `movielens:${ml.dir}`;
    const r = await runClusterBench(
      {
        data,
        model: 'fm',
        limit: 800,
        shards: 1,
        workers: 2,
        partitions: 4,
        serving: 0,
        batch: 32,
        lr: 0.01,
        threads: 1,
        window: 50,
        freshnessLoad: 0,
        tap: false,
        peer: true,
        timeoutMs: 25_000,
      },
      { harness: localClusterHarness() },
    );
    // every rating of the first 800 events is one labelled example
    const expected = await loadBenchData(data, { eventLimit: 800 });
    expect(expected.examples).toHaveLength(800);
    expect(r.examples).toBe(800);
    expect(r.progressive_examples).toBe(800);
    expect(r.fields).toEqual(['item:categorical', 'user:categorical']);
    expect(r.worker_auc as unknown[]).toHaveLength(2);
    const perWorker = r.worker_examples as number[];
    expect(perWorker.reduce((a, b) => a + b, 0)).toBe(800);
    expect(r.progressive_auc as number).toBeGreaterThan(0);
    // each worker's last 50 examples, merged (a worker that joined late may hold fewer)
    expect(r.window_examples).toBe(perWorker.reduce((a, n) => a + Math.min(50, n), 0));
    expect(typeof r.window_auc).toBe('number');
    // an fm on categorical fields has an exact peer; without Python/PyTorch it says so
    if (String(r.peer).startsWith('unavailable:')) expect(r.peer).toMatch(/python|PyTorch/i);
    else expect(r.peer_exact).toBe(true);
  }, 30_000);

  it('csv impressions and clicks with their spec: every row becomes one example, negatives when windows close', async () => {
    const r = await runClusterBench(
      {
        data: `csv:${csv.path}`,
        spec: csv.specPath,
        model: 'lr',
        shards: 1,
        workers: 1,
        partitions: 2,
        serving: 0,
        batch: 32,
        lr: 0.01,
        threads: 1,
        joinWindowMs: 500,
        freshnessLoad: 0,
        tap: false,
        peer: true,
        timeoutMs: 25_000,
      },
      { harness: localClusterHarness() },
    );
    expect(r.examples).toBe(csv.rows.length);
    expect(r.progressive_examples).toBe(csv.rows.length);
    expect(r.fields).toEqual(['item:categorical', 'score:numeric', 'title:tokens', 'user:categorical']);
    expect(r.peer).toBe(
      'unavailable: no PyTorch peer of lr on csv data (bench/peers/torch_online_fm.py is an FM)',
    );
  }, 30_000);
});
