import { resolve } from 'node:path';
import { FreshetError } from '@freshet/protocol';
import { z } from 'zod';
import {
  defaultKnobs,
  maxSustainable,
  simulate,
  type SimKnobs,
  type SimLayout,
  type SimResult,
} from './cluster-sim.js';
import { measureCosts, type MeasuredCosts } from './cost-probe.js';

/**
 * The scaling model: costs measured on this machine (cost-probe.ts) drive a discrete-event
 * simulation (cluster-sim.ts). It first simulates the local cluster of a `bench cluster` result
 * (every role on this machine's cores) and compares with that run's measured examples/s
 * (`calibration_error`), then clusters of 10, 100 and 1000 machines for each design in
 * {@link scalingDesigns}, built or not. For each it reports the highest sustainable examples/s,
 * the NATS traffic, bytes per example, freshness at 70% of that load, what saturates, whether
 * the issue's targets are met, and shard memory per billion rows. `docs/performance.md` explains
 * the numbers.
 */

/** Options of {@link runScalingModel}. */
export interface ScalingModelOptions {
  /** `criteo:PATH` (for the key statistics). */
  data: string;
  /** Cluster sizes (machines). */
  machines?: number[];
  coresPerMachine?: number;
  /** RAM per shard machine (GiB) for the memory figure. */
  ramGiB?: number;
  /** Costs measured before (skips the ~15 s probe). */
  costs?: MeasuredCosts;
  /** Simulated ms per run (default 1000). */
  simMs?: number;
  /**
   * A `bench cluster` result (its parsed JSON) run on this machine: the layout simulated first,
   * and the measured examples/s the prediction is compared with. Absent: no calibration.
   */
  calibrateWith?: unknown;
  /** Cores of this machine (default: the result's `machine.cpus`, else 2). */
  localCores?: number;
  progress?: (line: string) => void;
}

/** Machines per role for a cluster of `m` machines with `workerShare` of them workers. */
export function layoutFor(m: number, workerShare: number, cores: number): SimLayout {
  const nats = Math.max(1, Math.round(m * 0.05));
  const serving = Math.max(1, Math.round(m * 0.05));
  const rest = Math.max(2, m - nats - serving);
  const workerMachines = Math.max(1, Math.round(rest * workerShare));
  return {
    workerMachines,
    shardMachines: Math.max(1, rest - workerMachines),
    servingMachines: serving,
    natsMachines: nats,
    coresPerMachine: cores,
  };
}

/** Bytes of one Criteo feedback event on the bus (`bench wire`, docs/performance.md). */
export const criteoFeedbackBytes = 667;

/** A simulated design; `built` says whether the code runs it today or only the model does. */
export interface ScalingDesign {
  key: string;
  design: string;
  built: boolean;
  knobs: SimKnobs;
}

const base: SimKnobs = { ...defaultKnobs, feedbackBytes: criteoFeedbackBytes };

/** The designs `bench scaling` compares, in order. */
export const scalingDesigns: readonly ScalingDesign[] = [
  {
    key: 'today',
    design: 'dense tensors on one shard, pulled and pushed by every batch (dense.mode shard)',
    built: true,
    knobs: base,
  },
  {
    key: 'dense_split',
    design: 'dense tensors split over 64 shards (NOT BUILT)',
    built: false,
    knobs: { ...base, denseShards: 64 },
  },
  {
    key: 'dense_replica',
    design: 'dense replica on workers, flush every 2048 examples or 1 s (dense.mode replica)',
    built: true,
    knobs: { ...base, denseSyncExamples: 2048, denseMaxDelayMs: 1000 },
  },
  {
    key: 'replica_shard_per_host',
    design: 'dense replica + one multi-threaded shard process per host (shard per host NOT BUILT)',
    built: false,
    knobs: { ...base, denseSyncExamples: 2048, denseMaxDelayMs: 1000, shardPerHost: true },
  },
];

/** What calibration reads from a `bench cluster` result. */
const clusterResultSchema = z.object({
  bench: z.literal('cluster'),
  shards: z.number().int().positive(),
  workers: z.number().int().positive(),
  serving: z.number().int().nonnegative(),
  batch: z.number().int().positive(),
  examples_per_s: z.number().positive(),
  threads_per_worker: z.number().int().positive().optional(),
  dense: z.enum(['shard', 'replica']).optional(),
  dense_sync_examples: z.number().int().positive().nullish(),
  /** Absent in results from before the field: the workers' default then, 2 from batch 128. */
  in_flight: z.number().int().positive().optional(),
  tap: z.unknown().optional(),
  examples: z.number().positive().optional(),
  cpu_s: z.record(z.string(), z.number()).optional(),
  machine: z.object({ cpus: z.number().int().positive() }).partial().optional(),
});

/** A `bench cluster` result's fields calibration reads; CONFIG when it is not one. */
function parseClusterResult(result: unknown): z.infer<typeof clusterResultSchema> {
  const parsed = clusterResultSchema.safeParse(result);
  if (!parsed.success) {
    throw new FreshetError(
      'CONFIG',
      `--calibrate-with: not a bench cluster result (${parsed.error.issues
        .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
        .join('; ')})`,
    );
  }
  return parsed.data;
}

/** The local cluster of a `bench cluster` result, simulated on `cores` shared cores. */
export interface Calibration {
  layout: SimLayout;
  knobs: SimKnobs;
  measured_examples_per_s: number;
  predicted_examples_per_s: number;
  /** |predicted − measured| / measured. */
  calibration_error: number;
  bottleneck: string;
  utilisation: Record<string, number>;
  predicted_bytes_per_example: number;
  predicted_dense_bytes_per_example: number;
  /**
   * CPU µs per example by process kind, simulated (at the predicted rate) and measured (the
   * result's `cpu_s` over its examples; `bench` is the publisher, tap and metrics): where the
   * model under- or over-charges.
   */
  cpu_us_per_example: Record<string, { simulated: number; measured: number | null }>;
}

/**
 * Predicts the examples/s of the local cluster a `bench cluster` result measured: the same
 * processes, batch, dense mode and tap, every one of them (and the feedback publisher) on one
 * machine of `cores` cores, and compares with what that run measured.
 */
export function calibrate(
  costs: MeasuredCosts,
  result: unknown,
  opts: { cores?: number; simMs?: number } = {},
): Calibration {
  const r = parseClusterResult(result);
  const cores = opts.cores ?? r.machine?.cpus ?? 2;
  const layout: SimLayout = {
    workerMachines: r.workers,
    shardMachines: r.shards,
    servingMachines: r.serving,
    natsMachines: 1,
    coresPerMachine: cores,
    computeThreads: r.threads_per_worker ?? cores,
    sharedCores: cores,
  };
  const knobs: SimKnobs = {
    ...base,
    batch: r.batch,
    shardProcsPerMachine: 1,
    tap: r.tap !== undefined && r.tap !== null,
    inFlightBatches: r.in_flight ?? (r.batch >= 128 ? 2 : 1),
    ...(r.dense === 'replica'
      ? { denseSyncExamples: r.dense_sync_examples ?? 2048, denseMaxDelayMs: 1000 }
      : {}),
  };
  const max = maxSustainable(costs, layout, knobs, { simMs: opts.simMs ?? 2000, steps: 8, hi: 1000 });
  return {
    layout,
    knobs,
    measured_examples_per_s: r.examples_per_s,
    predicted_examples_per_s: max.throughput,
    calibration_error:
      Math.round((Math.abs(max.throughput - r.examples_per_s) / r.examples_per_s) * 1000) / 1000,
    bottleneck: max.bottleneck,
    utilisation: max.utilisation,
    predicted_bytes_per_example: max.busBytesPerExample,
    predicted_dense_bytes_per_example: max.denseBytesPerExample,
    cpu_us_per_example: Object.fromEntries(
      (
        [
          ['worker', 'worker'],
          ['shard', 'shard'],
          ['serving', 'serving'],
          ['nats', 'nats'],
          ['bench', 'clients'],
        ] as const
      ).map(([measured, simulated]) => {
        const cpu = r.cpu_s?.[measured];
        return [
          measured,
          {
            simulated: max.cpuUsPerExample[simulated],
            measured: cpu !== undefined && r.examples ? Math.round((cpu * 1e6) / r.examples) : null,
          },
        ];
      }),
    ),
  };
}

interface Row {
  machines: number;
  design: ScalingDesign;
  layout: SimLayout;
  max: SimResult;
  at70: SimResult;
}

/** The issue's targets (issue 16). */
export const scalingTargets = {
  examples_per_s_at_100: 1_000_000,
  examples_per_s_at_1000: 8_000_000,
  efficiency_10_to_1000: 0.8,
  freshness_p99_ms_at_70pct: 1000,
  calibration_error: 0.25,
} as const;

/** Runs the probe (unless costs are given), the calibration and the simulations; returns one JSON-able object. */
export async function runScalingModel(o: ScalingModelOptions): Promise<Record<string, unknown>> {
  const m = /^criteo:(.+)$/.exec(o.data);
  if (!m) throw new FreshetError('CONFIG', `--data must be criteo:PATH, got "${o.data}"`);
  const progress = o.progress ?? (() => undefined);
  // A bad --calibrate-with fails before the ~30 s probe.
  if (o.calibrateWith !== undefined) parseClusterResult(o.calibrateWith);
  progress('measuring per-message and per-row costs on this machine');
  const costs = o.costs ?? (await measureCosts(resolve(m[1]!)));
  const cores = o.coresPerMachine ?? 16;
  const ram = (o.ramGiB ?? 64) * 2 ** 30;
  const simMs = o.simMs ?? 1000;
  let calibration: Calibration | undefined;
  if (o.calibrateWith !== undefined) {
    calibration = calibrate(costs, o.calibrateWith, {
      ...(o.localCores !== undefined ? { cores: o.localCores } : {}),
    });
    progress(
      `calibration: predicted ${calibration.predicted_examples_per_s} examples/s here, measured ` +
        `${calibration.measured_examples_per_s} (error ${calibration.calibration_error})`,
    );
  }
  const sizes = o.machines ?? [10, 100, 1000];
  const rows: Row[] = [];
  for (const machines of sizes) {
    for (const design of scalingDesigns) {
      // A replica flushes every 2048 examples or 1 s: simulate several flushes past the warm-up.
      const runMs = design.knobs.denseSyncExamples ? Math.max(simMs, 3000) : simMs;
      let best: Row | undefined;
      // The split between workers and shards that sustains the most (a small grid, each bisected).
      for (const share of [0.2, 0.4, 0.6]) {
        const layout = layoutFor(machines, share, cores);
        const max = maxSustainable(costs, layout, design.knobs, { simMs: runMs, steps: 7 });
        if (!best || max.throughput > best.max.throughput) {
          best = { machines, design, layout, max, at70: max };
        }
      }
      const b = best!;
      b.at70 = simulate(costs, b.layout, Math.max(1, b.max.throughput * 0.7), design.knobs, runMs);
      progress(`${machines} machines, ${design.key}: ${b.max.throughput} examples/s (${b.max.bottleneck})`);
      rows.push(b);
    }
  }
  const saturated = (r: Row) =>
    r.max.throughput > 0 ? r.max.bottleneck : `${r.max.bottleneck} at the lowest load`;
  const table = rows.map((r) => {
    const perHost = r.design.knobs.shardPerHost === true;
    const shardProcs = perHost ? r.layout.shardMachines : r.layout.shardMachines * r.layout.coresPerMachine;
    return {
      machines: r.machines,
      design: r.design.key,
      built: r.design.built,
      workers: r.layout.workerMachines,
      shard_machines: r.layout.shardMachines,
      shard_processes: shardProcs,
      serving: r.layout.servingMachines,
      nats_servers: r.layout.natsMachines,
      examples_per_s: r.max.throughput,
      bottleneck: saturated(r),
      utilisation: r.max.utilisation,
      nats_msgs_per_s: r.max.natsMsgsPerS,
      nats_mb_per_s: Math.round(r.max.natsBytesPerS / 1e6),
      serving_mb_per_s_each: Math.round((r.max.servingBytesPerS / 1e6) * 10) / 10,
      bytes_per_example: r.max.throughput > 0 ? r.max.busBytesPerExample : null,
      dense_bytes_per_example: r.max.throughput > 0 ? r.max.denseBytesPerExample : null,
      examples_per_batch: r.max.examplesPerBatch,
      examples_per_flush: r.max.examplesPerFlush,
      shards_touched_per_batch: r.max.shardsTouchedPerBatch,
      batch_p50_ms: r.max.batchP50Ms,
      freshness_p50_ms_at_70pct: r.at70.freshnessP50Ms,
      freshness_p99_ms_at_70pct: r.at70.freshnessP99Ms,
    };
  });
  const designs = scalingDesigns.map((d) => {
    const of = (n: number) => rows.find((r) => r.design === d && r.machines === n);
    const out: Record<string, unknown> = { key: d.key, design: d.design, built: d.built };
    for (const n of sizes) {
      const r = of(n)!;
      out[`machines_${n}`] = {
        examples_per_s: r.max.throughput,
        freshness_p99_ms: r.max.throughput > 0 ? r.at70.freshnessP99Ms : null,
        saturated: saturated(r),
        // Per example of a sustained rate only (at none, the lowest rate tried says little).
        bytes_per_example: r.max.throughput > 0 ? r.max.busBytesPerExample : null,
        dense_bytes_per_example: r.max.throughput > 0 ? r.max.denseBytesPerExample : null,
      };
    }
    const eps = (n: number) => of(n)?.max.throughput;
    const e10 = eps(10);
    const e100 = eps(100);
    const e1000 = eps(1000);
    const efficiency =
      e10 && e1000 !== undefined ? Math.round((e1000 / 1000 / (e10 / 10)) * 1000) / 1000 : null;
    const p99s = rows
      .filter((r) => r.design === d)
      .map((r) => (r.max.throughput > 0 ? r.at70.freshnessP99Ms : null));
    out.scaling_efficiency_10_to_1000 = efficiency;
    out.targets_met = {
      examples_per_s_at_100: e100 === undefined ? null : e100 >= scalingTargets.examples_per_s_at_100,
      examples_per_s_at_1000: e1000 === undefined ? null : e1000 >= scalingTargets.examples_per_s_at_1000,
      efficiency_10_to_1000: efficiency === null ? null : efficiency >= scalingTargets.efficiency_10_to_1000,
      freshness_p99_ms_at_70pct: p99s.every(
        (p) => p !== null && p <= scalingTargets.freshness_p99_ms_at_70pct,
      ),
    };
    return out;
  });
  return {
    bench: 'scaling',
    data: o.data,
    cores_per_machine: cores,
    calibration_error: calibration?.calibration_error ?? null,
    calibration: calibration ?? null,
    targets: scalingTargets,
    calibration_met: calibration ? calibration.calibration_error <= scalingTargets.calibration_error : null,
    designs,
    costs,
    memory: {
      shard_bytes_per_row: costs.shardBytesPerRow,
      gib_per_billion_rows: Math.round((costs.shardBytesPerRow * 1e9) / 2 ** 30),
      shard_machines_per_billion_rows: Math.ceil((costs.shardBytesPerRow * 1e9) / (ram * 0.7)),
      ram_gib_per_machine: ram / 2 ** 30,
    },
    table,
  };
}
