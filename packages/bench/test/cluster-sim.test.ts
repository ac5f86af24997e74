import { describe, expect, it } from 'vitest';
import { FreshetError } from '@freshet/protocol';
import { defaultKnobs, simulate, maxSustainable, uniqueRows } from '../src/cluster-sim.js';
import type { MeasuredCosts } from '../src/cost-probe.js';
import { calibrate, criteoFeedbackBytes } from '../src/scaling-model.js';

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
  denseApplyFloatNs: 15,
  denseAddFloatNs: 20,
  jsPublishUs: 30,
  jsConsumeUs: 25,
  jsServerUs: 20,
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

  it('a dense replica on the workers cuts dense bytes per example by about the flush factor', () => {
    // Full batches of 64 (200 ms to fill at 1000 examples/s per worker), one flush per 512 examples.
    const knobs = { ...defaultKnobs, batch: 64, maxWaitMs: 200, feedbackBytes: criteoFeedbackBytes };
    const perBatch = simulate(costs, layout, 2000, knobs, 3000);
    const replica = simulate(costs, layout, 2000, { ...knobs, denseSyncExamples: 512 }, 3000);
    expect(perBatch.stable).toBe(true);
    expect(replica.stable).toBe(true);
    expect(perBatch.examplesPerBatch).toBe(64);
    expect(perBatch.examplesPerFlush).toBeNull();
    expect(replica.examplesPerFlush).toBeGreaterThanOrEqual(512);
    // Per batch the tensor travels three times (pull, push, delta) per batch; with the replica three
    // times (push, pull, delta) per flush.
    expect(perBatch.denseBytesPerExample).toBeGreaterThan((2.5 * costs.denseFloats * 4) / 64);
    const factor = replica.examplesPerFlush! / perBatch.examplesPerBatch;
    const ratio = perBatch.denseBytesPerExample / replica.denseBytesPerExample;
    expect(ratio).toBeGreaterThan(0.75 * factor);
    expect(ratio).toBeLessThan(1.25 * factor);
    // Sparse rows and feedback events travel as before.
    const sparseOf = (r: typeof perBatch) => r.busBytesPerExample - r.denseBytesPerExample;
    expect(Math.abs(sparseOf(replica) / sparseOf(perBatch) - 1)).toBeLessThan(0.1);
    // An event's freshness waits for the flush that carries its dense change.
    expect(replica.freshnessP50Ms!).toBeGreaterThan(perBatch.freshnessP50Ms!);
  });
});

describe('calibration against a measured local cluster', () => {
  const measured = {
    bench: 'cluster',
    shards: 2,
    workers: 1,
    serving: 1,
    batch: 256,
    threads_per_worker: 2,
    examples_per_s: 2000,
    tap: { pull: {} },
    machine: { cpus: 2 },
    examples: 10_000,
    cpu_s: { shard: 1.2, worker: 3, serving: 0.2, nats: 1.8, bench: 2.8 },
  };

  it('predicts the same layout on the shared cores and reports |predicted − measured| / measured', () => {
    const c = calibrate(costs, measured, { simMs: 1000 });
    expect(c.layout).toMatchObject({
      workerMachines: 1,
      shardMachines: 2,
      servingMachines: 1,
      sharedCores: 2,
    });
    expect(c.predicted_examples_per_s).toBeGreaterThan(0);
    const error = Math.abs(c.predicted_examples_per_s - 2000) / 2000;
    expect(c.calibration_error).toBeCloseTo(error, 3);
    // The measurement, not the prediction, moves the error: measured = predicted gives 0.
    const exact = calibrate(
      costs,
      { ...measured, examples_per_s: c.predicted_examples_per_s },
      { simMs: 1000 },
    );
    expect(exact.predicted_examples_per_s).toBe(c.predicted_examples_per_s);
    expect(exact.calibration_error).toBe(0);
    // Where the model's CPU goes, next to the run's own per-process CPU.
    expect(c.cpu_us_per_example.worker).toEqual({ simulated: expect.any(Number), measured: 300 });
    expect(c.cpu_us_per_example.bench!.measured).toBe(280);
    expect(c.cpu_us_per_example.worker!.simulated).toBeGreaterThan(
      costs.computeExampleUs + costs.jsConsumeUs,
    );
    // Every process shares the machine's cores: twice the cores predict more.
    const wider = calibrate(costs, measured, { simMs: 1000, cores: 4 });
    expect(wider.predicted_examples_per_s).toBeGreaterThan(c.predicted_examples_per_s);
    // A replica run is simulated as one, with less dense traffic.
    const rep = calibrate(
      costs,
      { ...measured, dense: 'replica', dense_sync_examples: 2048 },
      { simMs: 3000 },
    );
    expect(rep.knobs.denseSyncExamples).toBe(2048);
    expect(rep.predicted_dense_bytes_per_example).toBeLessThan(c.predicted_dense_bytes_per_example / 4);
  });

  it('rejects what is not a bench cluster result with CONFIG', () => {
    const bad = () => calibrate(costs, { bench: 'wire', shards: 2 });
    expect(bad).toThrow(FreshetError);
    expect(bad).toThrow(/not a bench cluster result/);
  });
});
