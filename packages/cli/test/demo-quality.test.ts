import { describe, expect, it } from 'vitest';
import { expectedAuc } from '../src/demo-quality.js';

describe('expectedAuc', () => {
  it('is 1 for a perfect ranking of certain labels, 0 for the reverse, 0.5 for constant scores', () => {
    expect(expectedAuc([0.1, 0.2, 0.9], [0, 0, 1])).toBe(1);
    expect(expectedAuc([0.9, 0.2, 0.1], [0, 0, 1])).toBe(0);
    expect(expectedAuc([0.5, 0.5, 0.5], [0, 1, 1])).toBe(0.5);
  });

  it('matches the mean AUC over sampled labels', () => {
    let s = 7;
    const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
    const truth = Array.from({ length: 60 }, () => rnd());
    const scores = truth.map((p) => p + (rnd() - 0.5) * 0.6);
    const exact = expectedAuc(scores, truth);
    let sum = 0;
    const trials = 3000;
    for (let t = 0; t < trials; t++) {
      const labels = truth.map((p) => (rnd() < p ? 1 : 0));
      sum += expectedAuc(scores, labels);
    }
    expect(Math.abs(sum / trials - exact)).toBeLessThan(0.01);
  });
});
