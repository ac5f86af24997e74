import { describe, expect, it } from 'vitest';
import { exactAuc, histogramAuc, logloss, ProgressiveMetrics } from '../src/progressive.js';
import { LrSchedule } from '../src/lr-schedule.js';
import { lrScheduleSchema } from '../src/worker-options.js';

/** O(n²) AUC straight from its definition: P(score of a positive > score of a negative). */
function bruteAuc(p: number[], y: number[]): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < p.length; i++) {
    if (y[i] !== 1) continue;
    for (let j = 0; j < p.length; j++) {
      if (y[j] !== 0) continue;
      den++;
      num += p[i]! > p[j]! ? 1 : p[i] === p[j] ? 0.5 : 0;
    }
  }
  return num / den;
}

function rng(seed: number) {
  let s = seed;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

describe('progressive metrics', () => {
  it('exact AUC equals the brute-force pairwise AUC, ties included', () => {
    const r = rng(7);
    for (let trial = 0; trial < 5; trial++) {
      const n = 300;
      const y = Array.from({ length: n }, () => (r() < 0.3 ? 1 : 0));
      // coarse scores so that ties occur, correlated with the label
      const p = y.map((l) => Math.round((r() * 0.7 + l * 0.3) * 20) / 20);
      expect(exactAuc(p, y)).toBeCloseTo(bruteAuc(p, y), 12);
    }
  });

  it('rolling window is exact over the last N; cumulative histogram AUC and logloss track brute force', () => {
    const r = rng(11);
    const m = new ProgressiveMetrics({ window: 500 });
    const P: number[] = [];
    const Y: number[] = [];
    for (let b = 0; b < 20; b++) {
      const y = Array.from({ length: 64 }, () => (r() < 0.25 ? 1 : 0));
      const p = y.map((l) => Math.min(0.999, r() * 0.6 + l * 0.35 * r()));
      m.add(Float32Array.from(p), Float32Array.from(y));
      P.push(...Float32Array.from(p));
      Y.push(...y);
      // a snapshot taken along the way (kept until the next example) must not stick
      if (b === 9) expect(m.snapshot()).toEqual(m.snapshot());
    }
    const s = m.snapshot();
    expect(s.examples).toBe(1280);
    expect(s.window).toBe(500);
    expect(s.windowAuc).toBeCloseTo(bruteAuc(P.slice(-500), Y.slice(-500)), 10);
    expect(Math.abs(s.auc - bruteAuc(P, Y))).toBeLessThan(1e-3);
    const ll = P.reduce((a, p, i) => a + logloss(p, Y[i]!), 0) / P.length;
    expect(s.logloss).toBeCloseTo(ll, 9);
    expect(histogramAuc(new Float64Array(4), new Float64Array(4))).toBeNaN();
  });

  it('lowers the learning rate when the progressive loss stops improving, and decays on schedule', () => {
    const lr = new LrSchedule(
      lrScheduleSchema.parse({ plateau: { windowExamples: 100, patience: 2, factor: 0.5, minScale: 0.2 } }),
    );
    for (let i = 0; i < 10; i++) lr.observe(0.7 - i * 0.05, 100); // improving
    expect(lr.scale()).toBe(1);
    for (let i = 0; i < 2; i++) lr.observe(0.5, 100); // flat
    expect(lr.scale()).toBe(0.5);
    for (let i = 0; i < 20; i++) lr.observe(0.5, 100);
    expect(lr.scale()).toBe(0.2);
    const decay = new LrSchedule(
      lrScheduleSchema.parse({ decay: 'exponential', halfLifeExamples: 1000, plateau: { enabled: false } }),
    );
    decay.observe(0.5, 1000);
    expect(decay.scale()).toBeCloseTo(0.5, 9);
  });

  it('detects a jump of the progressive loss (Page-Hinkley), undoes the plateau lowering and boosts the rate', () => {
    const lr = new LrSchedule(
      lrScheduleSchema.parse({
        plateau: { windowExamples: 2000, patience: 1, factor: 0.5, minScale: 0.1 },
        drift: { boost: 3, boostExamples: 10_000 },
      }),
    );
    // A stationary stream with batch noise (batches of 32, per-example loss sd ≈ 0.5): no alarm.
    let seed = 7;
    const noise = () => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return (seed / 2 ** 32 - 0.5) * 0.3;
    };
    for (let i = 0; i < 200_000 / 32; i++) lr.observe(0.45 + noise(), 32);
    expect(lr.drifts).toBe(0);
    expect(lr.lowered).toBeGreaterThan(0); // flat loss: the plateau rule lowered the rate
    const lowered = lr.scale();
    expect(lowered).toBeLessThan(1);
    // The stream changes: the loss jumps by 0.15 and stays there.
    let alarmAfter = -1;
    for (let i = 0; i < 4000 / 32 && alarmAfter < 0; i++) {
      lr.observe(0.6 + noise(), 32);
      if (lr.drifts > 0) alarmAfter = (i + 1) * 32;
    }
    expect(alarmAfter).toBeGreaterThan(0);
    expect(alarmAfter).toBeLessThan(1500);
    // plateau undone and boosted ×3, fading back to 1 over 10,000 examples while the model
    // relearns (the loss falls again, so the plateau rule stays quiet)
    expect(lr.scale()).toBeGreaterThan(2.9);
    let t = 0;
    const relearning = () => 0.6 - 0.15 * Math.min(1, (t += 32) / 11_000) + noise() * 0.1;
    for (let i = 0; i < 5000 / 32; i++) lr.observe(relearning(), 32);
    expect(lr.scale()).toBeGreaterThan(1.8);
    expect(lr.scale()).toBeLessThan(2.2);
    for (let i = 0; i < 6000 / 32; i++) lr.observe(relearning(), 32);
    expect(lr.scale()).toBe(1);
    expect(lr.drifts).toBe(1);

    const off = new LrSchedule(lrScheduleSchema.parse({ drift: { enabled: false } }));
    for (let i = 0; i < 300; i++) off.observe(0.45, 32);
    for (let i = 0; i < 300; i++) off.observe(0.9, 32);
    expect(off.drifts).toBe(0);
  });
});
