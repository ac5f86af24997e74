import { describe, expect, it } from 'vitest';
import { defaultKnobs, simulate, maxSustainable, uniqueRows } from '../src/cluster-sim.js';
import type { MeasuredCosts } from '../src/cost-probe.js';

/** Costs of the order measured on the 2-core dev machine (fixed, so the model is deterministic). */
const costs: MeasuredCosts = {
  natsRttUs: 150,
  nodeMsgUs: 15,
  nodeByteNs: 4,
  natsMsgUs: 3,
  natsByteNs: 3.5,
  applyRowUs: 2,
  pullRowUs: 2,
  deltaRowUs: 0.4,
  servingRowUs: 1,
  shardBytesPerRow: 237,
  computeExampleUs: 200,
  encodeExampleUs: 20,
  rows: { a: 72, b: 0.77, points: [] },
  denseFloats: 63361,
};
const layout = {
  workerMachines: 2,
  shardMachines: 6,
  servingMachines: 1,
  natsMachines: 1,
  coresPerMachine: 16,
};

describe('cluster simulation', () => {
  it('keeps up below capacity, fails above it, and freshness is at least batch fill + one delta tick', () => {
    const low = simulate(costs, layout, 2000);
    expect(low.stable).toBe(true);
    expect(low.throughput).toBeGreaterThan(1900);
    expect(low.throughput).toBeLessThan(2100);
    // Events wait for their batch (up to maxWait) and for the next delta tick before serving has them.
    expect(low.freshnessP50Ms).toBeGreaterThan(defaultKnobs.deltaIntervalMs);
    const high = simulate(costs, layout, 2_000_000);
    expect(high.stable).toBe(false);
    expect(high.throughput).toBeLessThan(2_000_000);
    // Same inputs, same numbers.
    expect(simulate(costs, layout, 2000)).toEqual(low);
  });

  it('finds a higher sustainable rate when the dense tensor no longer sits on one shard', () => {
    const one = maxSustainable(costs, layout, defaultKnobs, { simMs: 600, steps: 6 });
    const split = maxSustainable(
      costs,
      layout,
      { ...defaultKnobs, denseShards: 64 },
      { simMs: 600, steps: 6 },
    );
    expect(one.throughput).toBeGreaterThan(0);
    expect(split.throughput).toBeGreaterThan(one.throughput);
    expect(uniqueRows(costs, 256)).toBeGreaterThan(uniqueRows(costs, 16));
  });
});
