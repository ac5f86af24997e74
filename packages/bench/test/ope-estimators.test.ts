import { describe, expect, it } from 'vitest';
import {
  argmaxSlotProbabilities,
  estimatePolicyValue,
  rankCandidates,
  softmaxSlotProbabilities,
  uniformSlotProbabilities,
} from '../src/ope-estimators.js';

describe('off-policy estimators', () => {
  // four logged decisions: rewards, logging propensities, the evaluation policy's probability of
  // the logged item, its direct-method value per context and its prediction for the logged item
  const r = [1, 0, 1, 0];
  const p = [0.5, 0.25, 0.2, 0.5];
  const pi = [1, 0.5, 0, 0.25];
  const dm = [0.6, 0.2, 0.3, 0.1];
  const q = [0.5, 0.4, 0.2, 0.1];

  it('IPS, SNIPS, DM, DR and the effective sample size, by hand', () => {
    // weights 2, 2, 0, 0.5
    const e = estimatePolicyValue(r, p, { pLogged: pi, dm, qLogged: q });
    expect(e.ips).toBeCloseTo((2 * 1 + 2 * 0 + 0 + 0.5 * 0) / 4, 12); // 0.5
    expect(e.snips).toBeCloseTo(2 / 4.5, 12);
    expect(e.dm).toBeCloseTo((0.6 + 0.2 + 0.3 + 0.1) / 4, 12); // 0.3
    // corrections: 2(1−0.5) + 2(0−0.4) + 0 + 0.5(0−0.1) = 1 − 0.8 − 0.05 = 0.15
    expect(e.dr).toBeCloseTo(0.3 + 0.15 / 4, 12);
    expect(e.ess).toBeCloseTo(4.5 ** 2 / (4 + 4 + 0.25), 12);
    expect(e).toMatchObject({ matched: 3, clipped: 0, maxWeight: 2 });
  });

  it('clips weights and counts the clipped ones', () => {
    const e = estimatePolicyValue(r, p, { pLogged: pi }, 1.5);
    // weights 1.5, 1.5, 0, 0.5
    expect(e.ips).toBeCloseTo(1.5 / 4, 12);
    expect(e.snips).toBeCloseTo(1.5 / 3.5, 12);
    expect(e).toMatchObject({ clipped: 2, maxWeight: 1.5, matched: 3 });
    expect(e.dr).toBeUndefined();
  });

  it('the logging policy itself: weights 1, IPS = SNIPS = the mean reward, ESS = n', () => {
    const e = estimatePolicyValue(r, p, { pLogged: p });
    expect(e.ips).toBeCloseTo(0.5, 12);
    expect(e.snips).toBeCloseTo(0.5, 12);
    expect(e.ess).toBeCloseTo(4, 12);
  });

  it('SNIPS is null when the policy never shows a logged item; bad input is a BAD_REQUEST', () => {
    expect(estimatePolicyValue([1], [0.5], { pLogged: [0] }).snips).toBeNull();
    expect(() => estimatePolicyValue([1], [0], { pLogged: [1] })).toThrow(/propensity 0/);
    expect(() => estimatePolicyValue([1, 0], [0.5], { pLogged: [1] })).toThrow(/length/);
    expect(() => estimatePolicyValue([], [], { pLogged: [] })).toThrow(/no logged/);
    expect(() => estimatePolicyValue([1], [0.5], { pLogged: [1] }, 0)).toThrow(/clip/);
  });
});

describe('ranking policies', () => {
  it('argmax: slot k shows the k-th ranked candidate, ties by index, nothing past the list', () => {
    expect(rankCandidates([0.2, 0.9, 0.2, 0.5])).toEqual([1, 3, 0, 2]);
    expect([...argmaxSlotProbabilities([0.2, 0.9, 0.2, 0.5], 0)]).toEqual([0, 1, 0, 0]);
    expect([...argmaxSlotProbabilities([0.2, 0.9, 0.2, 0.5], 2)]).toEqual([1, 0, 0, 0]);
    expect([...argmaxSlotProbabilities([0.2, 0.9], 2)]).toEqual([0, 0]);
    expect([...uniformSlotProbabilities(4, 1)]).toEqual([0.25, 0.25, 0.25, 0.25]);
  });

  it('softmax: Plackett–Luce marginals by hand for three items', () => {
    // scores whose softmax at temperature 1 is (0.5, 0.3, 0.2)
    const s = [Math.log(0.5), Math.log(0.3), Math.log(0.2)];
    const s0 = softmaxSlotProbabilities(s, 0, 1);
    expect([...s0].map((x) => +x.toFixed(12))).toEqual([0.5, 0.3, 0.2]);
    const s1 = softmaxSlotProbabilities(s, 1, 1);
    // P(a second) = Σ_{b≠a} p_b p_a / (1 − p_b)
    expect(s1[0]).toBeCloseTo(0.3 * (0.5 / 0.7) + 0.2 * (0.5 / 0.8), 12);
    expect(s1[1]).toBeCloseTo(0.5 * (0.3 / 0.5) + 0.2 * (0.3 / 0.8), 12);
    expect(s1[2]).toBeCloseTo(0.5 * (0.2 / 0.5) + 0.3 * (0.2 / 0.7), 12);
    // with three items the third slot holds whatever the first two did not
    const s2 = softmaxSlotProbabilities(s, 2, 1);
    for (let a = 0; a < 3; a++) expect(s0[a]! + s1[a]! + s2[a]!).toBeCloseTo(1, 12);
    expect(s2[2]).toBeCloseTo(0.5 * (0.3 / 0.5) + 0.3 * (0.5 / 0.7), 12);
  });

  it('softmax: four items, slot 2 by enumerating the orders; temperature sharpens towards argmax', () => {
    const s = [1.2, -0.3, 0.4, 0.9];
    const T = 0.7;
    const e = s.map((x) => Math.exp(x / T));
    const exact = [0, 0, 0, 0];
    for (let b = 0; b < 4; b++)
      for (let c = 0; c < 4; c++)
        for (let a = 0; a < 4; a++) {
          if (b === c || a === b || a === c) continue;
          const all = e.reduce((x, y) => x + y, 0);
          exact[a] = exact[a]! + (e[b]! / all) * (e[c]! / (all - e[b]!)) * (e[a]! / (all - e[b]! - e[c]!));
        }
    const got = softmaxSlotProbabilities(s, 2, T);
    for (let a = 0; a < 4; a++) expect(got[a]).toBeCloseTo(exact[a]!, 12);
    expect(softmaxSlotProbabilities(s, 1, 0.01)[3]).toBeCloseTo(1, 6);
    expect(() => softmaxSlotProbabilities(s, 3, 1)).toThrow(/slots 0-2/);
    expect(() => softmaxSlotProbabilities(s, 0, 0)).toThrow(/temperature/);
  });
});
