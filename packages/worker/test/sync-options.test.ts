import { describe, expect, it } from 'vitest';
import type { ModelConfigInput } from '@freshet/model';
import { FreshetError } from '@freshet/protocol';
import { compileWorkerOptions } from '../src/worker-options.js';

const model: ModelConfigInput = {
  kind: 'lr',
  features: { fields: [{ kind: 'categorical', name: 'user' }] },
  optimizer: { kind: 'adam', lr: 0.01 },
  staleness: { policy: 'sync' },
};
const base = { cluster: 'c', model, shards: 2, partitions: 4 };

describe('worker options under sync steps', () => {
  it('keep one batch in flight at any batch size', () => {
    expect(compileWorkerOptions({ ...base, batch: { size: 256 } }).maxInFlightBatches).toBe(1);
    const async = { ...base, model: { ...model, staleness: { policy: 'scale' as const } } };
    expect(
      compileWorkerOptions({ ...async, batch: { size: 256 }, maxInFlightBatches: 2 }).maxInFlightBatches,
    ).toBe(2);
  });

  it('refuse a second batch in flight, a dense replica and a dense cache', () => {
    for (const extra of [
      { maxInFlightBatches: 2 },
      { dense: { mode: 'replica' as const } },
      { denseCacheMaxLag: 4 },
    ]) {
      expect(() => compileWorkerOptions({ ...base, ...extra }), JSON.stringify(extra)).toThrow(FreshetError);
    }
  });
});
