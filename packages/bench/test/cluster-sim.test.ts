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
    // A lone replica skips the pull-back (nobody else changed the tensor): two copies per flush.
    const alone = simulate(
      costs,
      { ...layout, workerMachines: 1 },
      1000,
      { ...knobs, denseSyncExamples: 512 },
      3000,
    );
    expect(alone.stable).toBe(true);
    const copies = (alone.denseBytesPerExample * alone.examplesPerFlush!) / (costs.denseFloats * 4);
    expect(copies).toBeGreaterThan(1.5);
    expect(copies).toBeLessThan(2.5);
  });
});

describe('compact encodings', () => {
  it('int8 rows and compressed events cut the bytes per example; inflating costs the worker CPU', () => {
    const knobs = {
      ...defaultKnobs,
      batch: 64,
      maxWaitMs: 200,
      feedbackBytes: 494,
      halfPull: true,
      halfPush: true,
      halfDeltas: true,
      pullSessions: true,
    };
    const half = simulate(costs, layout, 2000, knobs, 3000);
    const int8 = simulate(costs, layout, 2000, { ...knobs, int8Rows: true }, 3000);
    const packed = simulate(
      costs,
      layout,
      2000,
      { ...knobs, int8Rows: true, feedbackBytes: 200, eventInflateUs: 20, eventDeflateUs: 50 },
      3000,
    );
    for (const r of [half, int8, packed]) expect(r.stable).toBe(true);
    // rows of avgDim values: 2 bytes each as binary16, 1 + a 2-byte scale as int8
    const rowsPerExample = uniqueRows(costs, 64) / 64;
    const saved = half.busBytesPerExample - int8.busBytesPerExample;
    const perRow = defaultKnobs.avgDim - 2;
    expect(saved).toBeGreaterThan(2 * rowsPerExample * perRow);
    expect(saved).toBeLessThan(3.5 * rowsPerExample * perRow);
    // the event crosses the bus once per example in the count (publish), 294 bytes less
    expect(int8.busBytesPerExample - packed.busBytesPerExample).toBeCloseTo(294, -1);
    expect(packed.cpuUsPerExample.worker - int8.cpuUsPerExample.worker).toBeGreaterThan(15);
  });
});

describe('scale-out knobs', () => {
  const big = {
    workerMachines: 4,
    shardMachines: 8,
    servingMachines: 2,
    natsMachines: 1,
    coresPerMachine: 16,
  };
  const knobs = { ...defaultKnobs, denseSyncExamples: 2048, denseMaxDelayMs: 500, shardPerHost: true };

  it('sliced serving divides what each serving process receives; the adaptive interval caps its messages', () => {
    const whole = simulate(costs, big, 20_000, knobs, 2000);
    const sliced = simulate(
      costs,
      big,
      20_000,
      { ...knobs, servingProcsPerMachine: 4, servingNodesPerSlice: 2 },
      2000,
    );
    expect(whole.stable).toBe(true);
    expect(sliced.stable).toBe(true);
    // 2 machines × 4 processes, 2 per slice: 4 slices of the 8 hosts' 15 shards each. Slices are
    // by shard, so every host runs shards of every slice: a node still hears every host each
    // tick (its part of the host's delta), with a quarter of the rows.
    expect(sliced.servingMsgsPerS).toBeGreaterThan(whole.servingMsgsPerS * 0.8);
    expect(sliced.servingBytesPerS).toBeLessThan(whole.servingBytesPerS / 3);
    // 64 slices of 120 shards: a host runs a shard of a given slice with probability
    // 1 − (63/64)^15 ≈ 0.21, so a node hears about a fifth of the hosts.
    const many = simulate(
      costs,
      big,
      20_000,
      { ...knobs, servingProcsPerMachine: 64, servingNodesPerSlice: 2 },
      2000,
    );
    expect(many.servingMsgsPerS).toBeLessThan(whole.servingMsgsPerS / 3);
    // Rows shrink with the slice, the dense tensors (every slice follows their owners) do not:
    // what n slices save is (1 − 1/n) of the rows, so 64 slices save (63/64)/(3/4) of what 4 do.
    const saved = (r: { servingBytesPerS: number }) => whole.servingBytesPerS - r.servingBytesPerS;
    expect(saved(many) / saved(sliced)).toBeCloseTo(63 / 64 / (3 / 4), 1);
    // A bound on the slice count: 128 processes in at most 4 slices receive what 4 slices do.
    const bounded = simulate(
      costs,
      big,
      20_000,
      { ...knobs, servingProcsPerMachine: 64, servingNodesPerSlice: 2, servingMaxSlices: 4 },
      2000,
    );
    expect(saved(bounded) / saved(sliced)).toBeCloseTo(1, 1);
    // Shard hosts with changes tick every 5 ms: far more than the budget below.
    expect(whole.servingMsgsPerS).toBeGreaterThan(400);
    const adaptive = simulate(costs, big, 20_000, { ...knobs, deltaMsgsPerServingNode: 200 }, 2000);
    expect(adaptive.servingMsgsPerS).toBeLessThanOrEqual(220);
    // Fewer, larger deltas: each row changed within the longer window travels once.
    expect(adaptive.servingBytesPerS).toBeLessThan(whole.servingBytesPerS);
    expect(adaptive.freshnessP50Ms!).toBeGreaterThan(whole.freshnessP50Ms!);
    // The cap never stretches the interval past the freshness budget.
    const capped = simulate(
      costs,
      big,
      20_000,
      { ...knobs, deltaMsgsPerServingNode: 10, deltaMaxIntervalMs: 100 },
      2000,
    );
    expect(capped.servingMsgsPerS).toBeGreaterThan(8 * 8);
  });

  it('coalescing k batches per pull and push divides their messages, not their bytes', () => {
    // Four worker processes per machine: a machine's batches come four times as often.
    const perMachine = { ...knobs, shardPerHost: false, workerProcsPerMachine: 4, inFlightBatches: 4 };
    const one = simulate(costs, big, 20_000, perMachine, 2000);
    const co = simulate(costs, big, 20_000, { ...perMachine, coalesceBatches: 4 }, 2000);
    expect(one.stable).toBe(true);
    expect(co.stable).toBe(true);
    expect(co.natsMsgsPerS).toBeLessThan(one.natsMsgsPerS * 0.6);
    expect(Math.abs(co.busBytesPerExample / one.busBytesPerExample - 1)).toBeLessThan(0.1);
    // It waits for the machine's other batches: (k − 1) / 2 of the machine's batch intervals,
    // once. (Booked as the shards' work at the time it would leave, the wait also held up every
    // request arriving at those shards meanwhile: 52.9 ms here instead of 35.2.)
    const perWorker = 20_000 / (big.workerMachines * 4);
    const coWaitMs = (((4 - 1) / 2) * (co.examplesPerBatch / perWorker) * 1000) / 4;
    expect(co.batchP50Ms!).toBeGreaterThan(one.batchP50Ms!);
    expect(co.batchP50Ms! - one.batchP50Ms!).toBeLessThan(1.2 * coWaitMs);
    expect(co.batchP50Ms! - one.batchP50Ms!).toBeGreaterThan(0.6 * coWaitMs);
    // One process's own batches (worker lingerMs): the same messages, each waiting for batches
    // that come four times less often.
    const own = simulate(
      costs,
      big,
      20_000,
      { ...perMachine, coalesceBatches: 4, coalesceWithinProcess: true },
      2000,
    );
    expect(own.stable).toBe(true);
    expect(own.natsMsgsPerS).toBeLessThan(one.natsMsgsPerS * 0.6);
    expect(own.batchP50Ms! - one.batchP50Ms!).toBeGreaterThan(0.6 * 4 * coWaitMs);
    expect(own.batchP50Ms! - one.batchP50Ms!).toBeLessThan(1.2 * 4 * coWaitMs);
  });

  it("a shard host's queue wait is drawn at its load, not booked behind later arrivals", () => {
    // 480 worker processes each booking its batch's pull and push on all 32 hosts inline: a FIFO
    // lane served them in booking order, so a request waited behind ones arriving after it.
    const many = { ...big, workerMachines: 60, shardMachines: 32, natsMachines: 8, servingMachines: 4 };
    const hosts = {
      ...knobs,
      workerProcsPerMachine: 8,
      inFlightBatches: 4,
      coalesceBatches: 8,
      denseShards: 32,
      servingProcsPerMachine: 8,
      servingNodesPerSlice: 2,
    };
    const r = simulate(costs, many, 300_000, hosts, 1500);
    expect(r.stable).toBe(true);
    expect(r.utilisation.shard!).toBeLessThan(0.5);
    // a batch: its machine's coalescing wait, its compute, hops, and waits of the order of the
    // hosts' service times (54 ms here with FIFO lanes, 31 drawn)
    const perWorker = 300_000 / (60 * 8);
    const coWaitMs = (((8 - 1) / 2) * (r.examplesPerBatch / perWorker) * 1000) / 8;
    const computeMs = (r.examplesPerBatch * costs.computeExampleUs) / 1000;
    expect(r.batchP50Ms!).toBeLessThan(coWaitMs + computeMs + 5);
    expect(simulate(costs, many, 300_000, hosts, 1500)).toEqual(r);
  });

  it("a shard host's threads pay for handing each part to another thread", () => {
    const plain = simulate(costs, big, 20_000, knobs, 2000);
    const handed = simulate({ ...costs, threadPartUs: 10 }, big, 20_000, knobs, 2000);
    expect(plain.stable && handed.stable).toBe(true);
    expect(handed.utilisation.shard!).toBeGreaterThan(plain.utilisation.shard!);
    // A request's ~630 rows touch all 15 shard threads; the member of the host's queue group that
    // gets it hands 15/16 of those parts over on average, at 2 × 10 µs each (both ends): 16
    // requests per 250-example batch make ~18 µs an example, and the delta ticks (every thread's
    // part gathered on the host's thread) a few more.
    const requestsUs = (16 * 15 * (15 / 16) * 2 * 10) / handed.examplesPerBatch;
    const rise = handed.cpuUsPerExample.shard - plain.cpuUsPerExample.shard;
    expect(rise).toBeGreaterThan(requestsUs);
    expect(rise).toBeLessThan(requestsUs + 12);
    // shard processes (one per core) hand nothing over
    const procs = { ...knobs, shardPerHost: false };
    expect(simulate({ ...costs, threadPartUs: 10 }, big, 20_000, procs, 2000)).toEqual(
      simulate(costs, big, 20_000, procs, 2000),
    );
  });

  it("a process's coalesced batches hand their parts for a thread over as one group", () => {
    // Four batches of one process per host message (worker lingerMs): each keeps its own part per
    // shard; a thread gets the message's parts for it as one group, each part beyond the first
    // charged threadGroupPartUs (threadPartUs where the costs predate groups).
    const own = {
      ...knobs,
      workerProcsPerMachine: 4,
      inFlightBatches: 4,
      coalesceBatches: 4,
      coalesceWithinProcess: true,
    };
    const run = (c: MeasuredCosts) => simulate(c, big, 20_000, own, 2000);
    const dear = run({ ...costs, threadPartUs: 10, threadGroupPartUs: 10 });
    const cheap = run({ ...costs, threadPartUs: 10, threadGroupPartUs: 1 });
    expect(dear.stable && cheap.stable).toBe(true);
    expect(run({ ...costs, threadPartUs: 10 })).toEqual(dear);
    // A part's ~630 rows touch all 15 shard threads: per message 15 groups of 4 parts, so 45
    // parts beyond a group's first, 15/16 of them handed over, 2 × 9 µs less each (both ends),
    // a quarter of it per batch, for each of a batch's 16 requests (a pull and a push per host).
    const savedUs = (16 * (45 / 4) * (15 / 16) * 2 * 9) / cheap.examplesPerBatch;
    const fell = dear.cpuUsPerExample.shard - cheap.cpuUsPerExample.shard;
    expect(fell).toBeGreaterThan(0.8 * savedUs);
    expect(fell).toBeLessThan(1.2 * savedUs);
  });

  it('a batch pays a part per shard thread it touches; merged windows and host parts divide it', () => {
    const parts = {
      ...costs,
      workerPullPartUs: 10,
      workerPushPartUs: 10,
      shardPullPartUs: 5,
      shardPushPartUs: 15,
    };
    const rise = (k: typeof knobs, role: 'worker' | 'shard') => {
      const plain = simulate(costs, big, 20_000, k, 2000);
      const charged = simulate(parts, big, 20_000, k, 2000);
      expect(plain.stable && charged.stable).toBe(true);
      return (charged.cpuUsPerExample[role] - plain.cpuUsPerExample[role]) * charged.examplesPerBatch;
    };
    // within 15%: per example of the batches measured (their fill varies a little), and the dense
    // replica's flushes add a little of their own to the shards
    const near = (got: number, want: number) => {
      expect(got).toBeGreaterThan(0.85 * want);
      expect(got).toBeLessThan(1.15 * want);
    };
    // A batch's ~5000 rows over 8 hosts touch all 15 shard threads of each: 120 parts, each a pull
    // and a push, charged to the worker (20 µs a part) and to the shards (20 µs a part).
    near(rise(knobs, 'worker'), 120 * 20);
    near(rise(knobs, 'shard'), 120 * 20);
    const counted = simulate(parts, big, 20_000, knobs, 2000);
    expect(counted.workerPartsPerBatch).toBeCloseTo(120, -1);
    expect(counted.shardPartsPerBatch).toBeCloseTo(120, -1);
    // Workers that address hosts pay per host (8), the shards as before.
    const hostParts = { ...knobs, hostParts: true };
    near(rise(hostParts, 'worker'), 8 * 20);
    near(rise(hostParts, 'shard'), 120 * 20);
    // Four batches of a process merged per shard: a quarter of the parts each, both ends.
    const window = {
      ...knobs,
      workerProcsPerMachine: 4,
      inFlightBatches: 4,
      coalesceBatches: 4,
      coalesceWithinProcess: true,
    };
    near(rise(window, 'worker'), 120 * 20);
    const merged = { ...window, mergeWindowParts: true };
    near(rise(merged, 'worker'), 30 * 20);
    near(rise(merged, 'shard'), 30 * 20);
    const hostCounted = simulate(parts, big, 20_000, { ...knobs, hostParts: true }, 2000);
    expect(hostCounted.workerPartsPerBatch).toBeCloseTo(8, 0);
    expect(hostCounted.shardPartsPerBatch).toBeCloseTo(120, -1);
    expect(simulate(parts, big, 20_000, merged, 2000).shardPartsPerBatch).toBeCloseTo(30, -1);
    // 128 shard processes, all touched: a part each; and costs measured before parts charge none
    const procs = { ...knobs, shardPerHost: false };
    near(rise(procs, 'worker'), 128 * 20);
    expect(
      simulate(
        {
          ...parts,
          workerPullPartUs: undefined,
          workerPushPartUs: undefined,
          shardPullPartUs: undefined,
          shardPushPartUs: undefined,
        },
        big,
        20_000,
        knobs,
        2000,
      ),
    ).toEqual(simulate(costs, big, 20_000, knobs, 2000));
  });

  it("the workers' adaptive linger grows with the worker processes, bounding a host's messages", () => {
    const adaptive = { ...knobs, workerProcsPerMachine: 4, inFlightBatches: 4, hostMsgsPerS: 4000 };
    const more = { ...big, workerMachines: 8 };
    const small = simulate(costs, big, 20_000, adaptive, 2000);
    const large = simulate(costs, more, 40_000, adaptive, 2000);
    expect(small.stable && large.stable).toBe(true);
    // 2000 × processes / budget ms of each process's batches, one every fill: 16 processes
    // linger 8 ms, 32 linger 16 ms; the same events per process, so the same fill
    const expected = (r: typeof small, procs: number) => {
      const fillMs = (r.examplesPerBatch / (r.throughput / procs)) * 1000;
      return 1 + (2000 * procs) / 4000 / fillMs;
    };
    expect(small.batchesPerMessage).toBeGreaterThan(1);
    expect(small.batchesPerMessage).toBeCloseTo(expected(small, 16), 0);
    expect(large.batchesPerMessage).toBeCloseTo(expected(large, 32), 0);
    expect(large.batchesPerMessage - 1).toBeGreaterThan(1.6 * (small.batchesPerMessage - 1));
    // twice the workers, twice the events: host messages grow by less than twice
    const hostMsgs = (r: typeof small) => r.natsMsgsPerS;
    expect(hostMsgs(large)).toBeLessThan(2 * hostMsgs(small));
    // the default coalesces nothing
    expect(
      simulate(costs, big, 20_000, { ...adaptive, hostMsgsPerS: undefined }, 2000).batchesPerMessage,
    ).toBe(1);
  });

  it("a shard host's message work is spread over its threads, not one endpoint thread", () => {
    // One shard machine of 16 cores for 16 worker machines, rows cheap: the host's message work
    // (receive, reply, their bytes) outweighs its row work.
    const oneHost = {
      workerMachines: 16,
      shardMachines: 1,
      servingMachines: 0,
      natsMachines: 4,
      coresPerMachine: 16,
    };
    const cheapRows = { ...costs, pullRowUs: 0.2, applyRowUs: 0.2, threadPartUs: 2 };
    const r = simulate(cheapRows, oneHost, 300_000, { ...knobs, inFlightBatches: 8 }, 1000);
    expect(r.stable).toBe(true);
    expect(r.examplesPerBatch).toBe(256);
    // A batch's pull (keys in, rows out) and push (rows in), hand-offs and delta ticks left out:
    // at this rate more than two threads' worth, which one endpoint thread could not carry.
    const rows = uniqueRows(cheapRows, 256);
    const rowBytes = defaultKnobs.avgDim * 4 + 8;
    const messageUs = 4 * costs.nodeMsgUs + (rows * (8 + rowBytes + rowBytes + 4) * costs.nodeByteNs) / 1000;
    expect((r.throughput / 256) * messageUs).toBeGreaterThan(2e6);
    // its 16 threads (its own and 15 shard threads) are not even half busy
    expect(r.utilisation.shard!).toBeLessThan(0.6);
    expect(r.bottleneck).not.toMatch(/shard/);
  });

  it('several shard hosts per machine: fewer parts to hand over per message, more messages', () => {
    const handed = { ...costs, threadPartUs: 10 };
    const one = simulate(costs, big, 20_000, knobs, 2000);
    const oneHanded = simulate(handed, big, 20_000, knobs, 2000);
    const hosts4 = { ...knobs, hostsPerMachine: 4 };
    const four = simulate(costs, big, 20_000, hosts4, 2000);
    const fourHanded = simulate(handed, big, 20_000, hosts4, 2000);
    expect(one.stable && oneHanded.stable && four.stable && fourHanded.stable).toBe(true);
    expect(four.natsMsgsPerS).toBeGreaterThan(1.5 * one.natsMsgsPerS);
    // a message's parts over 3 shard threads, not 15: less hand-off per example in all...
    const handoff = (a: typeof one, b: typeof one) => b.cpuUsPerExample.shard - a.cpuUsPerExample.shard;
    expect(handoff(four, fourHanded)).toBeLessThan(0.8 * handoff(one, oneHanded));
    // ...but each host answers as many messages with 4 threads as one host with 16
    expect(four.cpuUsPerExample.shard).toBeGreaterThan(one.cpuUsPerExample.shard);
    expect(fourHanded.utilisation.shard!).toBeGreaterThan(oneHanded.utilisation.shard!);
  });

  it('one dense replica per machine flushes per machine, not per process', () => {
    const procs = { ...knobs, shardPerHost: false, workerProcsPerMachine: 4 };
    const each = simulate(costs, big, 8000, procs, 3000);
    const shared = simulate(costs, big, 8000, { ...procs, denseReplicaPerMachine: true }, 3000);
    expect(each.stable).toBe(true);
    expect(shared.stable).toBe(true);
    // 16 processes at 500 examples/s flush on the 500 ms timer; 4 machine replicas carry 4× as much each
    expect(shared.examplesPerFlush! / each.examplesPerFlush!).toBeGreaterThan(3);
    expect(shared.denseBytesPerExample).toBeLessThan(each.denseBytesPerExample / 3);
  });

  it('cpuScale multiplies the CPU charged to that process kind only', () => {
    const plain = simulate(costs, layout, 2000);
    const scaled = simulate(costs, layout, 2000, { ...defaultKnobs, cpuScale: { worker: 2 } });
    const ratio = scaled.cpuUsPerExample.worker / plain.cpuUsPerExample.worker;
    expect(ratio).toBeGreaterThan(1.9);
    expect(ratio).toBeLessThan(2.2);
    expect(Math.abs(scaled.cpuUsPerExample.shard / plain.cpuUsPerExample.shard - 1)).toBeLessThan(0.02);
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
    examples_per_s: 1500,
    tap: { pull: {} },
    machine: { cpus: 2 },
    examples: 10_000,
    cpu_s: { shard: 1.2, worker: 5, serving: 0.2, nats: 1.8, bench: 2.8 },
    per_batch: { examples_per_batch: 200 },
  };

  it('fits a CPU multiplier per process kind and predicts the fitted run from it', () => {
    const c = calibrate(costs, measured, { simMs: 3000 });
    expect(c.layout).toMatchObject({
      workerMachines: 1,
      shardMachines: 2,
      servingMachines: 1,
      sharedCores: 2,
    });
    expect(c.calibration_basis).toBe('fit only');
    expect(c.fit.predicted_examples_per_s).toBeGreaterThan(0);
    const error = Math.abs(c.fit.predicted_examples_per_s - 1500) / 1500;
    expect(c.calibration_error).toBeCloseTo(error, 3);
    // Calibrated, each kind's simulated CPU per example is its measured one (within the
    // difference between the measured rate and the predicted one's batch fill).
    for (const role of ['worker', 'shard', 'nats'] as const) {
      const x = c.fit.cpu_us_per_example[role]!;
      expect(x.measured).toBe(Math.round((measured.cpu_s[role] * 1e6) / 10_000));
      expect(Math.abs(x.calibrated / x.measured! - 1)).toBeLessThan(0.25);
    }
    expect(c.cpu_scale.worker).toBeGreaterThan(1);
    // Every process shares the machine's cores: the measured CPU fills 2 cores at about
    // 2 / (CPU s per example) examples/s.
    const perExample = Object.values(measured.cpu_s).reduce((a, b) => a + b, 0) / 10_000;
    expect(c.fit.predicted_examples_per_s).toBeLessThan(1.3 * (2 / perExample));
    expect(c.fit.predicted_examples_per_s).toBeGreaterThan(0.4 * (2 / perExample));
  });

  it('reports the error on held-out results, not on the one it was fitted on', () => {
    const heldOut = { ...measured, shards: 4, serving: 2, examples_per_s: 1000 };
    const c = calibrate(costs, measured, { simMs: 3000, heldOut: [heldOut] });
    expect(c.calibration_basis).toBe('held-out');
    expect(c.held_out).toHaveLength(1);
    const h = c.held_out[0]!;
    expect(h.shards).toBe(4);
    expect(h.error).toBeCloseTo(Math.abs(h.predicted_examples_per_s - 1000) / 1000, 3);
    expect(c.calibration_error).toBe(h.error);
    // More processes on the same cores: more messages per example, a lower prediction.
    expect(h.predicted_examples_per_s).toBeLessThan(c.fit.predicted_examples_per_s);
    // A replica run is simulated as one, with less dense traffic.
    const rep = calibrate(costs, measured, {
      simMs: 3000,
      heldOut: [{ ...measured, dense: 'replica', dense_sync_examples: 2048 }],
    });
    expect(rep.held_out[0]!.dense).toBe('replica');
    expect(rep.held_out[0]!.predicted_dense_bytes_per_example).toBeLessThan(
      rep.fit.predicted_dense_bytes_per_example / 4,
    );
  });

  it('rejects what is not a bench cluster result with CONFIG', () => {
    const bad = () => calibrate(costs, { bench: 'wire', shards: 2 });
    expect(bad).toThrow(FreshetError);
    expect(bad).toThrow(/not a bench cluster result/);
    expect(() => calibrate(costs, measured, { heldOut: [{ bench: 'cluster' }] })).toThrow(
      /held-out result 1: not a bench cluster result/,
    );
  });
});
