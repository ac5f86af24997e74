import { describe, expect, it } from 'vitest';
import type { ModelConfigInput } from '@freshet/model';
import { compileWorkerOptions } from '../src/worker-options.js';

const model: ModelConfigInput = {
  kind: 'lr',
  features: { fields: [{ kind: 'categorical', name: 'user' }] },
};
const base = { cluster: 'c', model, shards: 1, partitions: 1 };

describe('worker options', () => {
  it('keeps one batch in flight at any batch size unless told (each one more adds staleness)', () => {
    expect(compileWorkerOptions({ ...base, batch: { size: 64 } }).maxInFlightBatches).toBe(1);
    expect(compileWorkerOptions({ ...base, batch: { size: 256 } }).maxInFlightBatches).toBe(1);
    expect(
      compileWorkerOptions({ ...base, batch: { size: 64 }, maxInFlightBatches: 3 }).maxInFlightBatches,
    ).toBe(3);
  });
});
