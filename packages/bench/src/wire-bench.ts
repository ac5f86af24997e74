import { z } from 'zod';
import { FreshetError } from '@freshet/protocol';
import { benchModels } from './bench-models.js';
import { busOptionsOf, busOptionsSchema, busReport } from './bus-options.js';
import { runClusterBench, type ClusterBenchDeps } from './cluster-bench.js';
import type { BenchActor } from './cluster-harness.js';
import type { TapSummary, WireTapReport } from './wire-tap.js';

/**
 * `freshet bench wire`: what one learned example costs on the bus, at several cluster shapes.
 * Each configuration is a short `bench cluster` run (no peer, no freshness phase) whose passive
 * tap counts every pull, push, delta and feedback message. Messages and bytes per example do not
 * depend on how many cores the machine has, so a small machine shows how they scale with shards
 * and serving nodes even where it cannot show throughput.
 */

const grid = (max: number, min: number) => z.array(z.number().int().min(min).max(max)).min(1);

/** Options of {@link runWireBench}; `wireBenchOptionsSchema` fills in the defaults. */
export const wireBenchOptionsSchema = z
  .object({
    /** Any data ref `bench cluster` takes; `synthetic` needs no dataset. */
    data: z.string().min(1).default('synthetic'),
    spec: z.string().optional(),
    /** Shard process counts of the grid. */
    shards: grid(64, 1).default([2, 4, 8]),
    /** Serving node counts of the grid. */
    serving: grid(64, 0).default([1, 2, 4]),
    workers: z.number().int().min(1).max(64).default(1),
    /**
     * Run each configuration's shards on this many shard hosts (at most its shard count) instead
     * of one process each: with host routing a batch's requests go per host, not per shard.
     */
    shardHosts: z.number().int().min(1).max(64).optional(),
    /** Examples per configuration: the costs per example settle within a few batches. */
    limit: z.number().int().min(1).default(3000),
    model: z.enum(benchModels).default('wide-deep'),
    batch: z.number().int().min(1).max(65_536).default(256),
    partitions: z.number().int().min(1).max(1024).default(8),
    /** Publish each configuration's events before its workers start (`bench cluster --backlog`). */
    backlog: z.boolean().default(false),
    ...busOptionsSchema.shape,
    /** Deadline of each configuration (ms). */
    timeoutMs: z
      .number()
      .int()
      .min(1000)
      .default(5 * 60_000),
  })
  .strict();
export type WireBenchOptionsInput = z.input<typeof wireBenchOptionsSchema>;
export type WireBenchOptions = z.infer<typeof wireBenchOptionsSchema>;

/**
 * The issue's done-when for the wire: from the fewest to the most shards, bytes per example grow
 * at most 10% and messages per example at most 20%, and an example costs at most 1.5 KB.
 */
export const wireTargets = { bytesRatio: 1.1, msgsRatio: 1.2, bytesPerExample: 1536 } as const;

const r2 = (x: number) => Math.round(x * 100) / 100;
const r4 = (x: number) => Math.round(x * 10_000) / 10_000;

interface KindCost {
  msgs_per_example: number;
  bytes_per_example: number;
  dense_bytes_per_example: number;
  sparse_bytes_per_example: number;
}

/** Requests and their replies count alike: both cross the bus once. */
function kindCost(s: TapSummary, examples: number): KindCost {
  return {
    msgs_per_example: r4((s.count + s.replies) / examples),
    bytes_per_example: r2((s.bytes + s.replyBytes) / examples),
    dense_bytes_per_example: r2(s.denseBytes / examples),
    sparse_bytes_per_example: r2(s.sparseBytes / examples),
  };
}

/** One configuration's wire costs from its cluster bench result. */
export function wireCosts(
  r: Record<string, unknown>,
  shape: { shards: number; serving: number },
): Record<string, unknown> {
  const tap = r.tap as WireTapReport | null;
  const examples = r.examples as number;
  if (!tap || !(examples > 0)) throw new FreshetError('UNAVAILABLE', 'bench wire: the run has no tap report');
  const kinds = {
    pull: kindCost(tap.pull, examples),
    push: kindCost(tap.push, examples),
    delta: kindCost(tap.delta, examples),
    feedback: kindCost(tap.feedback, examples),
  };
  const batches = (r.per_batch as { batches?: number } | undefined)?.batches ?? null;
  const all = Object.values(kinds);
  const total = (k: keyof KindCost) => all.reduce((a, c) => a + c[k], 0);
  const ps = (k: keyof KindCost) => kinds.pull[k] + kinds.push[k] + kinds.delta[k];
  // The tap sees a delta once; every serving node (its only subscribers) receives a copy.
  const deltaCopies = shape.serving;
  return {
    shards: shape.shards,
    serving: shape.serving,
    examples,
    auc: r.progressive_auc ?? null,
    bytes_per_example: r2(total('bytes_per_example')),
    msgs_per_example: r4(total('msgs_per_example')),
    dense_bytes_per_example: r2(total('dense_bytes_per_example')),
    sparse_bytes_per_example: r2(total('sparse_bytes_per_example')),
    // The parameter server's own traffic: feedback is one message per event at any shape.
    ps_bytes_per_example: r2(ps('bytes_per_example')),
    ps_msgs_per_example: r4(ps('msgs_per_example')),
    delivered_bytes_per_example: r2(
      total('bytes_per_example') + (deltaCopies - 1) * kinds.delta.bytes_per_example,
    ),
    delivered_msgs_per_example: r4(
      total('msgs_per_example') + (deltaCopies - 1) * kinds.delta.msgs_per_example,
    ),
    ...kinds,
    // Pulls and pushes go per batch, and a batch closes early when events come slowly: read
    // their per-example counts next to how full the batches were.
    batches,
    examples_per_batch: batches ? r2(examples / batches) : null,
    undecoded: tap.undecoded,
    seconds: r.seconds ?? null,
  };
}

/** Ratios of the most to the fewest shards at each serving count, and the AUC spread. */
export function wireRatios(configs: ReadonlyArray<Record<string, unknown>>): Record<string, unknown> {
  const shards = configs.map((c) => c.shards as number);
  const lo = Math.min(...shards);
  const hi = Math.max(...shards);
  const at = (s: number, n: number) => configs.find((c) => c.shards === s && c.serving === n);
  const bytes: Record<string, number> = {};
  const msgs: Record<string, number> = {};
  const psMsgs: Record<string, number> = {};
  for (const n of [...new Set(configs.map((c) => c.serving as number))]) {
    const a = at(lo, n);
    const b = at(hi, n);
    if (!a || !b) continue;
    bytes[n] = r4((b.bytes_per_example as number) / (a.bytes_per_example as number));
    msgs[n] = r4((b.msgs_per_example as number) / (a.msgs_per_example as number));
    psMsgs[n] = r4((b.ps_msgs_per_example as number) / (a.ps_msgs_per_example as number));
  }
  const aucs = configs.map((c) => c.auc).filter((x): x is number => typeof x === 'number');
  const worst = (m: Record<string, number>) => (Object.keys(m).length ? Math.max(...Object.values(m)) : null);
  const maxBytes = Math.max(...configs.map((c) => c.bytes_per_example as number));
  const bytesRatio = worst(bytes);
  const msgsRatio = worst(msgs);
  return {
    from_shards: lo,
    to_shards: hi,
    // Keyed by serving node count.
    bytes_per_example_ratio: bytes,
    msgs_per_example_ratio: msgs,
    ps_msgs_per_example_ratio: psMsgs,
    auc_spread: aucs.length ? r4(Math.max(...aucs) - Math.min(...aucs)) : null,
    targets: {
      bytes_ratio_max: wireTargets.bytesRatio,
      msgs_ratio_max: wireTargets.msgsRatio,
      bytes_per_example_max: wireTargets.bytesPerExample,
      bytes_ratio_met: bytesRatio === null ? null : bytesRatio <= wireTargets.bytesRatio,
      msgs_ratio_met: msgsRatio === null ? null : msgsRatio <= wireTargets.msgsRatio,
      bytes_per_example_met: maxBytes <= wireTargets.bytesPerExample,
    },
  };
}

/**
 * Runs every shards × serving configuration one after another (each a fresh local cluster) and
 * returns ONE JSON-able object; progress goes to `deps.progress`.
 */
export async function runWireBench<A extends BenchActor>(
  input: WireBenchOptionsInput,
  deps: ClusterBenchDeps<A>,
): Promise<Record<string, unknown>> {
  const parsed = wireBenchOptionsSchema.safeParse(input);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new FreshetError('CONFIG', `bench wire: ${i?.path.join('.') ?? ''} ${i?.message ?? 'invalid'}`);
  }
  const o = parsed.data;
  const configs: Array<Record<string, unknown>> = [];
  let machine: unknown = null;
  let eventDictionary: unknown = null;
  for (const shards of o.shards) {
    for (const serving of o.serving) {
      deps.progress?.(`wire: ${shards} shard(s), ${serving} serving node(s)`);
      const r = await runClusterBench(
        {
          data: o.data,
          ...(o.spec !== undefined ? { spec: o.spec } : {}),
          shards,
          serving,
          ...(o.shardHosts !== undefined ? { shardHosts: Math.min(o.shardHosts, shards) } : {}),
          workers: o.workers,
          partitions: o.partitions,
          limit: o.limit,
          model: o.model,
          batch: o.batch,
          backlog: o.backlog,
          ...busOptionsOf(o),
          tap: true,
          tapFeedback: true,
          peer: false,
          freshnessLoad: 0,
          timeoutMs: o.timeoutMs,
        },
        deps,
      );
      machine = r.machine ?? machine;
      eventDictionary = r.event_dictionary ?? eventDictionary;
      configs.push({
        ...wireCosts(r, { shards, serving }),
        shard_hosts: o.shardHosts !== undefined ? Math.min(o.shardHosts, shards) : null,
      });
    }
  }
  return {
    bench: 'wire',
    data: o.data,
    model: o.model,
    workers: o.workers,
    shard_hosts: o.shardHosts ?? null,
    batch: o.batch,
    limit: o.limit,
    partitions: o.partitions,
    backlog: o.backlog,
    ...busReport(o),
    event_dictionary: eventDictionary,
    configs,
    ratios: wireRatios(configs),
    machine,
  };
}
