import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDirs, writeOpenBanditFixture } from '@freshet/testkit';
import { runOpeBench } from '../src/ope-bench.js';

const dir = useTempDirs()('ope');
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

describe('bench ope on a csv log', () => {
  it('reads propensities through the joiner and estimates a known policy exactly', async () => {
    // two items, each shown with propensity 0.5; item A has quality 1, B 0. Rows: A clicked,
    // B not, A not, B clicked, A clicked, B not; one user without clicks on a third item's row
    // whose propensity is missing (not evaluable)
    const file = join(dir, 'log.csv');
    writeFileSync(
      file,
      'user,item,position,propensity,click,quality\n' +
        ['u1,A,0,0.5,1,1', 'u2,B,0,0.5,0,0', 'u3,A,0,0.5,0,1', 'u4,B,0,0.5,1,0', 'u5,A,0,0.5,1,1']
          .concat(['u6,B,0,0.5,0,0', 'u7,A,0,,0,1'])
          .join('\n') +
        '\n',
    );
    const spec = {
      kind: 'impression-click' as const,
      label: { column: 'click' },
      user: 'user',
      item: 'item',
      position: 'position',
      propensity: 'propensity',
      numeric: ['quality'],
    };
    const r = await runOpeBench({
      data: `csv:${file}`,
      spec,
      train: false,
      policies: { quality: (f) => f.quality as number, worst: (f) => -(f.quality as number) },
    });
    expect(r).toMatchObject({ decisions: 6, clicks: 3, candidates: 2, no_propensity: 1 });
    expect(r.logging.value).toBeCloseTo(0.5, 6);
    // `quality` always shows A: weight 2 on the three A rows (rewards 1, 0, 1)
    expect(r.estimates.quality).toMatchObject({ matched: 3, max_weight: 2, ess: 3, clipped: 0 });
    expect(r.estimates.quality!.ips).toBeCloseTo(4 / 6, 6);
    expect(r.estimates.quality!.snips).toBeCloseTo(4 / 6, 6);
    expect(r.estimates.worst!.ips).toBeCloseTo(2 / 6, 6);
    expect(r.estimates.random!.ips).toBeCloseTo(0.5, 6);
    const clipped = await runOpeBench({
      data: `csv:${file}`,
      spec,
      train: false,
      clip: 1.5,
      policies: { quality: (f) => f.quality as number },
    });
    expect(clipped.estimates.quality).toMatchObject({ clipped: 3, max_weight: 1.5 });
    expect(clipped.estimates.quality!.ips).toBeCloseTo(3 / 6, 6);
  });
});

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
