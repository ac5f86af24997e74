import { describe, expect, it } from 'vitest';
import { runWireBench } from '@freshet/bench';
import { localClusterHarness } from '../src/bench-harness.js';

type Kind = Record<
  'msgs_per_example' | 'bytes_per_example' | 'dense_bytes_per_example' | 'sparse_bytes_per_example',
  number
>;
type Config = Record<string, unknown> & Record<'pull' | 'push' | 'delta' | 'feedback', Kind>;

describe('bench wire', () => {
  it('measures bytes and messages per example on the bus of real clusters at 1 and 2 shards', async () => {
    const r = await runWireBench(
      {
        data: 'synthetic',
        shards: [1, 2],
        serving: [1],
        limit: 400,
        batch: 64,
        partitions: 1,
        timeoutMs: 50_000,
      },
      { harness: localClusterHarness() },
    );
    const configs = r.configs as Config[];
    expect(configs.map((c) => [c.shards, c.serving])).toEqual([
      [1, 1],
      [2, 1],
    ]);
    for (const c of configs) {
      for (const f of [
        'examples',
        'bytes_per_example',
        'msgs_per_example',
        'dense_bytes_per_example',
        'sparse_bytes_per_example',
        'ps_bytes_per_example',
        'ps_msgs_per_example',
        'delivered_bytes_per_example',
        'delivered_msgs_per_example',
      ]) {
        expect(c[f], f).toBeGreaterThan(0);
      }
      expect(typeof c.auc).toBe('number');
      expect(c.undecoded).toBe(0);
      for (const k of ['pull', 'push', 'delta', 'feedback'] as const) {
        expect(c[k].msgs_per_example, k).toBeGreaterThan(0);
        expect(c[k].bytes_per_example, k).toBeGreaterThan(0);
      }
      // wide-deep has dense MLP tables and sparse embeddings, and both travel in pulls and pushes
      expect(c.pull.dense_bytes_per_example).toBeGreaterThan(0);
      expect(c.push.sparse_bytes_per_example).toBeGreaterThan(0);
      // one serving node receives each delta once
      expect(c.delivered_bytes_per_example).toBe(c.bytes_per_example);
    }
    // Every batch's keys hash to both shards: a pull and a push (and their replies) to each per
    // batch. Per batch, since a loaded machine closes more batches before they are full.
    const [one, two] = configs as [Config, Config];
    const perBatch = (c: Config, k: 'pull' | 'push') =>
      c[k].msgs_per_example * (c.examples_per_batch as number);
    for (const k of ['pull', 'push'] as const) {
      expect(perBatch(one, k), k).toBeGreaterThanOrEqual(1.9);
      expect(perBatch(two, k), k).toBeGreaterThan(1.5 * perBatch(one, k));
    }
    // the same events were published either way
    expect(two.feedback.msgs_per_example).toBe(one.feedback.msgs_per_example);
    const ratios = r.ratios as Record<string, unknown> & {
      bytes_per_example_ratio: Record<string, number>;
      msgs_per_example_ratio: Record<string, number>;
      ps_msgs_per_example_ratio: Record<string, number>;
      targets: Record<string, unknown>;
    };
    expect(ratios.from_shards).toBe(1);
    expect(ratios.to_shards).toBe(2);
    expect(ratios.bytes_per_example_ratio['1']).toBeCloseTo(
      (two.bytes_per_example as number) / (one.bytes_per_example as number),
      3,
    );
    expect(ratios.ps_msgs_per_example_ratio['1']).toBeCloseTo(
      (two.ps_msgs_per_example as number) / (one.ps_msgs_per_example as number),
      3,
    );
    // (per example, the total moves with how full a loaded machine's batches got; per batch it
    // grows with the shards, checked above)
    expect(ratios.msgs_per_example_ratio['1']).toBeCloseTo(
      (two.msgs_per_example as number) / (one.msgs_per_example as number),
      3,
    );
    expect(typeof ratios.auc_spread).toBe('number');
    expect(Object.keys(ratios.targets)).toContain('bytes_ratio_met');
  }, 60_000);
});
