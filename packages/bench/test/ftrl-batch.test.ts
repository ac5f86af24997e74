import { describe, expect, it } from 'vitest';
import { SyntheticWorld } from '@freshet/client';
import { exactAuc } from '@freshet/worker';
import type { ModelConfigInput } from '@freshet/model';
import { trainOnline } from '../src/online-trainer.js';

/**
 * FTRL's α, β, λ1, λ2 are per-example quantities (McMahan et al. 2013). Pushes carry their
 * example count and the shard applies the summed-loss gradient, so one setting means the same
 * at batch 1 and at batch 256: the progressive AUC on the same stream must agree. (This is the
 * summed mode, `sequential: false`; the lr model's default trains per example on the workers.)
 */
const model: ModelConfigInput = {
  kind: 'lr',
  features: {
    fields: ['user', 'item', 'category', 'position'].map((name) => ({ kind: 'categorical' as const, name })),
  },
  optimizer: { kind: 'ftrl', alpha: 0.1, beta: 1, l1: 1, l2: 1, sequential: false },
};
const examples = [
  ...new SyntheticWorld({ seed: 3, users: 50, items: 40, requests: 1600, slate: 5 }).labelled(),
];
const constant = { plateau: { enabled: false }, drift: { enabled: false } };

describe('FTRL hyper-parameters per example', () => {
  it('batch 1 and batch 256 reach the same progressive AUC (within 0.005); mean-loss gradients do not', async () => {
    const auc = async (batch: number, sendExamples = true) => {
      const r = await trainOnline({ model, examples, batch, threads: 1, lr: constant, sendExamples });
      return exactAuc(r.preds, r.labels);
    };
    const one = await auc(1);
    const big = await auc(256);
    expect(one).toBeGreaterThan(0.54); // it learned something
    expect(Math.abs(one - big)).toBeLessThan(0.005);
    // control: the same textbook setting on batch-mean gradients learns (almost) nothing at 256
    const mean = await auc(256, false);
    expect(one - mean).toBeGreaterThan(0.02);
  }, 120_000);
});
