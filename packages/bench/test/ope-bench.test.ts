import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDirs, writeOpenBanditFixture } from '@freshet/testkit';
import { runOpeBench } from '../src/ope-bench.js';

const dir = useTempDirs()('ope');
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

describe('bench ope on the Open Bandit generator', () => {
  it('a policy that knows the generator’s truth beats a random ranking under IPS and SNIPS', async () => {
    // a uniformly random logging policy over 10 items, 3 slots
    const items = 10;
    const fx = writeOpenBanditFixture(join(dir, 'truth'), { rows: 40_000, items, seed: 2 });
    const quality = new Map(fx.itemFeatures.map((f, i) => [String(i), f[0]]));
    const r = await runOpeBench({
      data: `obd:${fx.root}`,
      train: false,
      policies: { truth: (f) => quality.get(String(f.item))! },
    });
    expect(r).toMatchObject({ decisions: 40_000, candidates: items, slots: 3, no_propensity: 0 });
    expect(r.clicks).toBe(fx.clicks);
    const { truth, random } = r.estimates as Record<string, Record<string, number>>;
    // uniform logging: the random ranking's weights are all 1, its IPS the logged mean reward
    expect(random!.ips).toBe(r.logging.value);
    expect(random!.ess).toBe(40_000);
    expect(truth!.ips).toBeGreaterThan(random!.ips! * 1.4);
    expect(truth!.snips).toBeGreaterThan(random!.snips! * 1.4);
    // it matches the logged item in about one decision in ten, each with weight 10
    expect(truth!.matched).toBeGreaterThan(3600);
    expect(truth!.matched).toBeLessThan(4400);
    expect(truth!.max_weight).toBe(10);

    // and IPS finds the truth's value: the generator's click model (affinity 1-3 for 5% of rows,
    // item quality, position) averaged over the slots, at the truth's k-th best item in slot k
    const best = [...quality.values()].sort((a, b) => b - a);
    const click = (x: number) =>
      0.95 * sigmoid(-5.6 + x) + (0.05 / 3) * [1, 2, 3].reduce((s, a) => s + sigmoid(-5.6 + a + x), 0);
    const value = [0, 1, 2].reduce((s, k) => s + click(0.5 * best[k]! - 0.4 * k), 0) / 3;
    expect(Math.abs(truth!.ips! - value) / value).toBeLessThan(0.45);
  });

  it('trains a model progressively and estimates it next to the frozen model and a random ranking', async () => {
    const fx = writeOpenBanditFixture(join(dir, 'model'), { rows: 3000, items: 8, seed: 5 });
    const r = await runOpeBench({ data: `obd:${fx.root}`, batch: 128 });
    expect(Object.keys(r.estimates)).toEqual(['model', 'frozen', 'random']);
    expect(r.progressive!.auc).toBeGreaterThan(0);
    for (const e of Object.values(r.estimates)) {
      expect(e.dr).toEqual(expect.any(Number));
      expect(e.dm).toEqual(expect.any(Number));
      expect(e.ess).toBeLessThanOrEqual(3000);
      expect(e.clipped).toBe(0);
    }
    // a deterministic ranking matches the logged item about one decision in eight
    for (const k of ['model', 'frozen']) {
      expect(r.estimates[k]!.max_weight).toBe(8);
      expect(r.estimates[k]!.matched).toBeGreaterThan(250);
      expect(r.estimates[k]!.matched).toBeLessThan(500);
      expect(r.estimates[k]!.ess).toBe(r.estimates[k]!.matched);
    }
    expect(r.estimates.random!.ips).toBe(r.logging.value);
  });
});
