import { resolve } from 'node:path';
import { FreshetError } from '@freshet/protocol';
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
 * simulation (cluster-sim.ts) of clusters of 10, 100 and 1000 machines, today's design and a
 * variant with the dense tensors split over shards. For each it reports the highest sustainable
 * examples/s, the NATS traffic, freshness at 70% of that load, what saturates, and shard memory
 * per billion rows. `docs/performance.md` explains the numbers.
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

interface Row {
  machines: number;
  design: string;
  layout: SimLayout;
  max: SimResult;
  at70: SimResult;
}

/** Runs the probe (unless costs are given) and the simulations; returns one JSON-able object. */
export async function runScalingModel(o: ScalingModelOptions): Promise<Record<string, unknown>> {
  const m = /^criteo:(.+)$/.exec(o.data);
  if (!m) throw new FreshetError('CONFIG', `--data must be criteo:PATH, got "${o.data}"`);
  const progress = o.progress ?? (() => undefined);
  progress('measuring per-message and per-row costs on this machine');
  const costs = o.costs ?? (await measureCosts(resolve(m[1]!)));
  const cores = o.coresPerMachine ?? 16;
  const ram = (o.ramGiB ?? 64) * 2 ** 30;
  const designs: Array<[string, SimKnobs]> = [
    ['today (dense tensors on one shard)', defaultKnobs],
    ['dense split over 64 shards', { ...defaultKnobs, denseShards: 64 }],
  ];
  const rows: Row[] = [];
  for (const machines of o.machines ?? [10, 100, 1000]) {
    for (const [design, knobs] of designs) {
      let best: Row | undefined;
      // The split between workers and shards that sustains the most (a small grid, each bisected).
      for (const share of [0.2, 0.4, 0.6]) {
        const layout = layoutFor(machines, share, cores);
        const max = maxSustainable(costs, layout, knobs, { simMs: o.simMs ?? 1000, steps: 7 });
        if (!best || max.throughput > best.max.throughput) {
          best = { machines, design, layout, max, at70: max };
        }
      }
      const b = best!;
      b.at70 = simulate(costs, b.layout, Math.max(1, b.max.throughput * 0.7), knobs, o.simMs ?? 1000);
      progress(`${machines} machines, ${design}: ${b.max.throughput} examples/s (${b.max.bottleneck})`);
      rows.push(b);
    }
  }
  const table = rows.map((r) => {
    const shardProcs = r.layout.shardMachines * r.layout.coresPerMachine;
    return {
      machines: r.machines,
      design: r.design,
      workers: r.layout.workerMachines,
      shard_machines: r.layout.shardMachines,
      shard_processes: shardProcs,
      serving: r.layout.servingMachines,
      nats_servers: r.layout.natsMachines,
      examples_per_s: r.max.throughput,
      bottleneck: r.max.bottleneck,
      utilisation: r.max.utilisation,
      nats_msgs_per_s: r.max.natsMsgsPerS,
      nats_mb_per_s: Math.round(r.max.natsBytesPerS / 1e6),
      serving_mb_per_s_each: Math.round((r.max.servingBytesPerS / 1e6) * 10) / 10,
      shards_touched_per_batch: r.max.shardsTouchedPerBatch,
      batch_p50_ms: r.max.batchP50Ms,
      freshness_p50_ms_at_70pct: r.at70.freshnessP50Ms,
      freshness_p99_ms_at_70pct: r.at70.freshnessP99Ms,
    };
  });
  return {
    bench: 'scaling',
    data: o.data,
    cores_per_machine: cores,
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
