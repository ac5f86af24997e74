import { describe, expect, it } from 'vitest';
import { clusterView } from '../src/actor-view.js';
import type { ActorStatus } from '../src/discovery.js';

function worker(
  id: string,
  counts: [number, number, number][],
  lossSum: number,
  weightSum: number,
): ActorStatus {
  const examples = counts.reduce((a, [, p, n]) => a + p + n, 0);
  return {
    role: 'worker',
    id,
    cluster: 'c',
    serviceId: id,
    version: '0',
    started: '',
    metadata: {},
    endpoints: [],
    status: { examples, progressiveHistogram: { bins: 4, counts, lossSum, weightSum, examples } },
  };
}

describe('cluster-wide progressive metrics', () => {
  it('merges the workers histograms instead of averaging their AUCs', () => {
    // Worker a ranks perfectly within itself (AUC 1), so does b, but b's scores are all lower:
    // together, b's positives sit below a's negatives, so the cluster AUC is well below 1.
    const a = worker(
      'a',
      [
        [2, 0, 10],
        [3, 10, 0],
      ],
      4,
      20,
    );
    const b = worker(
      'b',
      [
        [0, 0, 10],
        [1, 10, 0],
      ],
      6,
      20,
    );
    const v = clusterView([a, b], 'c');
    expect(v.progressive?.examples).toBe(40);
    // pairs: a+ > a-, b+ > b-, a+ > b-, b+ < a-  →  3 of 4 blocks of 100 pairs
    expect(v.progressive?.auc).toBeCloseTo(0.75, 6);
    expect(v.progressive?.logloss).toBeCloseTo(10 / 40, 6);
  });

  it('is null without workers reporting histograms', () => {
    expect(clusterView([], 'c').progressive).toBeNull();
  });
});
