import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnChild, waitFor } from '@freshet/testkit';
import { runClusterBench } from '../src/bench-cluster.js';
import { defaultKnobs, simulate, maxSustainable, uniqueRows } from '../src/cluster-sim.js';
import type { MeasuredCosts } from '../src/cost-probe.js';
import { CpuMeter, procCpuSeconds } from '../src/proc-cpu.js';

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'pnpm-workspace.yaml'))) dir = dirname(dir);
  return dir;
}
const criteo = resolve(repoRoot(), '../shared/data/criteo-kaggle-head10k/train_head10k.txt');

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

describe('CPU per process', () => {
  it('charges a busy child process its CPU seconds from /proc', async () => {
    const busy = spawnChild(process.execPath, ['-e', 'const t=Date.now(); while (Date.now()-t < 20000) {}']);
    const pid = busy.child.pid!;
    const meter = new CpuMeter(() => [{ group: 'busy', pid }]);
    meter.mark();
    await waitFor(() => (meter.seconds().busy ?? 0) >= 0.3, { timeoutMs: 10_000, message: 'busy child CPU' });
    expect(procCpuSeconds(pid)).toBeGreaterThanOrEqual(0.3);
    await busy.stop(1000);
    // A process that exited keeps the CPU it was last seen with.
    expect(meter.seconds().busy).toBeGreaterThanOrEqual(0.3);
  });
});

describe('runClusterBench', () => {
  it('runs a real local cluster on a few hundred Criteo examples and reports every headline field', async () => {
    const r = await runClusterBench({
      data: `criteo:${criteo}`,
      limit: 300,
      shards: 1,
      workers: 1,
      partitions: 1,
      serving: 1,
      batch: 64,
      freshnessLoad: 0,
      peer: false,
      timeoutMs: 50_000,
    });
    expect(r.examples).toBe(300);
    expect(r.examples_per_s as number).toBeGreaterThan(0);
    expect(r.progressive_auc as number).toBeGreaterThan(0);
    expect(r.progressive_auc as number).toBeLessThan(1);
    expect(r.rejected_pushes).toBe(0);
    expect(Object.keys(r.cpu_s as object).sort()).toEqual(['bench', 'nats', 'serving', 'shard', 'worker']);
    const pb = r.per_batch as { push: { rows: number; requests: number } };
    expect(pb.push.requests).toBeGreaterThanOrEqual(1);
    expect(pb.push.rows).toBeGreaterThan(0);
    expect(typeof r.freshness_p50_ms).toBe('number');
  }, 60_000);
});
