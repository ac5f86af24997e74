import { describe, expect, it } from 'vitest';
import { ModelGuard, modelGuardSchema, type GuardTrip } from '../src/model-guard.js';

/**
 * The guard's windowed comparison, fed batch losses directly: windows of 100 examples, a baseline
 * of 2 windows, trips at +25 % (and at least +0.02).
 */
const opts = modelGuardSchema.parse({
  enabled: true,
  windowExamples: 100,
  baselineWindows: 2,
  maxRise: 0.25,
});

function feed(g: ModelGuard, loss: number, examples: number): void {
  for (let i = 0; i < examples; i += 50) g.observe(loss, 50);
}

describe('model guard', () => {
  it('trips once on a window worse than its baseline by more than the bound, then re-baselines', () => {
    const trips: GuardTrip[] = [];
    const g = new ModelGuard(opts, (t) => trips.push(t));
    feed(g, 0.5, 200);
    expect(g.status().baseline).toBeCloseTo(0.5);
    feed(g, 0.6, 100); // +20 %: within the bound
    expect(trips).toHaveLength(0);
    feed(g, 0.8, 100); // vs (0.5 + 0.6) / 2 = 0.55: +45 %
    expect(trips).toHaveLength(1);
    expect(trips[0]!.logloss).toBeCloseTo(0.8);
    expect(trips[0]!.baseline).toBeCloseTo(0.55);
    expect(trips[0]!.reason).toMatch(/progressive logloss 0\.8000/);
    // a new baseline is formed first: the same loss again does not trip at once
    feed(g, 0.8, 300);
    expect(trips).toHaveLength(1);
    expect(g.status().trips).toBe(1);
  });

  it('never trips below the absolute bound, nor when disabled', () => {
    const trips: GuardTrip[] = [];
    const low = new ModelGuard({ ...opts, minRise: 0.02 }, (t) => trips.push(t));
    feed(low, 0.01, 200);
    feed(low, 0.025, 100); // +150 %, but +0.015 absolute
    const off = new ModelGuard({ ...opts, enabled: false }, (t) => trips.push(t));
    feed(off, 0.5, 200);
    feed(off, 2, 100);
    expect(trips).toHaveLength(0);
    expect(off.status().baseline).toBeNull();
  });
});
