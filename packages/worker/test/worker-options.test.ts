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

  it('overlaps pushes unless told not to, never under sync steps nor with a dense replica', () => {
    expect(compileWorkerOptions(base).overlapPush).toBe(true);
    expect(compileWorkerOptions({ ...base, overlapPush: false }).overlapPush).toBe(false);
    const replica = { ...base, dense: { mode: 'replica' as const } };
    expect(compileWorkerOptions(replica).overlapPush).toBe(false);
    expect(() => compileWorkerOptions({ ...replica, overlapPush: true })).toThrow(/dense.mode replica/);
    const sync: ModelConfigInput = { ...model, staleness: { policy: 'sync' } };
    expect(compileWorkerOptions({ ...base, model: sync }).overlapPush).toBe(false);
    expect(() => compileWorkerOptions({ ...base, model: sync, overlapPush: true })).toThrow(/sync/);
    // batches awaiting their push's answer also hold their messages
    const a = compileWorkerOptions({ ...base, batch: { size: 256 }, overlapPush: false });
    const b = compileWorkerOptions({ ...base, batch: { size: 256 } });
    expect(b.consumer.maxAckPending - a.consumer.maxAckPending).toBe(256);
  });
});
