import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { z } from 'zod';
import { runReplay } from '@freshet/client';
import { compileModelConfig } from '@freshet/model';
import { connectNats, findNatsServer, natsServerVersion } from '@freshet/nats';
import { FreshetError, mergeProgressive, type ProgressiveHistogram } from '@freshet/protocol';
import { loadBenchData } from './bench-data.js';
import { benchModelConfig, benchModels } from './bench-models.js';
import { busOptionsSchema, busReport } from './bus-options.js';
import { benchDictionary, type BenchDictionary } from './event-dictionary.js';
import type { BenchActor, BenchCluster, ClusterHarness } from './cluster-harness.js';
import { peerInits, runExactPeer } from './exact-peer.js';
import { CpuMeter } from './proc-cpu.js';
import { repoRoot } from './repo-root.js';
import { WireTap, type WireTapReport } from './wire-tap.js';

/**
 * `freshet bench cluster`: the whole loop on this machine. A real local cluster (nats-server +
 * S shard, W worker, N serving processes) learns a dataset replayed as `freshet replay` publishes
 * it (a Criteo file as pre-labelled `example` events, other data as impressions, clicks, ratings);
 * throughput, progressive quality, staleness, freshness and CPU per role come from the
 * processes' own status (service API) and from /proc, the per-request shard times from a passive
 * tap on the bus. Quality is the workers' progressive AUC from their merged score histograms (one
 * AUC of every example, not a mean of per-worker AUCs). The PyTorch peer then trains on the same
 * data in the same run, where an exact peer of the model exists.
 */

/** Options of {@link runClusterBench}; `clusterBenchOptionsSchema` fills in the defaults. */
export const clusterBenchOptionsSchema = z
  .object({
    /**
     * Any data ref `freshet replay` takes (`criteo:PATH`, `movielens:PATH`, `obd:PATH`,
     * `csv:PATH` with `spec`, `synthetic[:k=v,...]`), PATH relative to the current directory.
     */
    data: z.string().min(1),
    /** The csv spec file of `csv:` data. */
    spec: z.string().optional(),
    shards: z.number().int().min(1).max(64).default(2),
    /**
     * Run the shards on this many shard hosts (docs/resharding.md) instead of one process each;
     * with `placements`, the number of hosts that run them at equal steps of the first pass.
     */
    shardHosts: z.number().int().min(1).max(64).optional(),
    /** Shard threads per shard host (the host option `threads`; needs `shardHosts`). */
    shardThreads: z.number().int().min(0).max(64).optional(),
    /**
     * Host counts the shards are spread over during the throughput phase, at equal fractions of
     * the examples learned: `[2, 4, 2]` starts on 2 hosts, moves to 4 at 1/3, back to 2 at 2/3.
     */
    placements: z.array(z.number().int().min(1).max(64)).min(1).optional(),
    workers: z.number().int().min(1).max(64).default(1),
    serving: z.number().int().min(0).max(64).default(1),
    /**
     * Sliced serving: node i holds slice i mod n (cluster config `serving.slices`; the shards get
     * `servingSlices`). The result then lists what each serving node held and received.
     */
    servingSlices: z.number().int().min(1).max(64).optional(),
    /** Feedback partitions of the stream. */
    partitions: z.number().int().min(1).max(1024).default(8),
    /**
     * Events/s to publish. Without it the data is published as fast as JetStream acks (the cluster
     * learns at its own highest rate), then replayed once more at `freshnessLoad` × that rate to
     * measure freshness at a sustainable load.
     */
    rate: z.number().positive().optional(),
    /**
     * The throughput phase trains from a backlog: the data is published first, with no worker
     * running, then the workers start and the clock runs from when they report running. This is
     * the like-for-like number next to the PyTorch peer, which trains from parsed tensors in
     * memory: the publisher's parsing and JetStream's writes are not in it.
     */
    backlog: z.boolean().default(false),
    /** Passes over the data in the throughput phase. */
    passes: z.number().int().min(1).max(100).default(1),
    /** Only the first `limit` examples of the file. */
    limit: z.number().int().min(1).optional(),
    /**
     * A model kind on the data's fields, or on Criteo data the Criteo configs (as `bench train`):
     * `wide-deep` the peer's model with an Adagrad-trained wide table, `wide-deep-peer` the peer's
     * optimizers exactly, `deepfm`.
     */
    model: z.enum(benchModels).default('wide-deep'),
    /** Seed of the embedding and dense initialisation. */
    seed: z.number().int().min(0).max(0xffff).default(0),
    /** Embedding width of models on non-Criteo data. */
    dim: z.number().int().min(1).max(1024).default(8),
    /**
     * Each worker's rolling progressive window (`metrics.window`); the result's `window_auc` merges
     * the workers' windows after the throughput phase.
     */
    window: z.number().int().min(10).max(1_000_000).optional(),
    /**
     * Attribution window of the workers' joiner (ms) for impression data: an unclicked impression
     * becomes a negative when it closes, and the bench waits for every example.
     */
    joinWindowMs: z.number().int().min(100).default(2000),
    batch: z.number().int().min(1).max(65_536).default(256),
    /**
     * Synchronous steps (the model's staleness policy `sync`): `batch` is the global batch, each
     * worker's is batch/workers, and the cluster trains like one learner at `batch`.
     */
    sync: z.boolean().default(false),
    /**
     * Batches each worker keeps in flight before their push is sent (worker option
     * `maxInFlightBatches`; default: the worker's, 1). One makes every pull see the previous
     * push: no staleness.
     */
    inFlight: z.number().int().min(1).max(64).optional(),
    /**
     * The worker's `overlapPush` (default: the worker's, on except with `sync` or a dense
     * replica): the next batch starts once a push is sent rather than answered.
     */
    overlapPush: z.boolean().optional(),
    lr: z.number().positive().default(3e-3),
    ...busOptionsSchema.shape,
    /** Compute threads per worker (default: the cores shared out among workers, at least 1). */
    threads: z.number().int().min(1).max(64).optional(),
    /** Fraction of the measured throughput the freshness phase publishes at; 0 skips that phase. */
    freshnessLoad: z.number().min(0).max(1).default(0.7),
    /** Observe pull/push/delta traffic on the bus (one extra copy of it through this process). */
    tap: z.boolean().default(true),
    /** The tap also counts the events published to the stream (`bench wire`'s feedback bytes). */
    tapFeedback: z.boolean().default(false),
    /** Run bench/peers/torch_online.py on the same data after the cluster stopped. */
    peer: z.boolean().default(true),
    /** The Criteo peer's initial weights: Freshet's or PyTorch's own (exact-peer.ts). */
    peerInit: z.enum(peerInits).default('freshet'),
    /** The Python that `machine.torch` reports the PyTorch version of (peers: $FRESHET_PYTHON or this). */
    python: z.string().default('/usr/bin/python3'),
    /** Whole-run deadline (ms). */
    timeoutMs: z
      .number()
      .int()
      .min(1000)
      .default(15 * 60_000),
  })
  .strict()
  .refine((o) => !o.backlog || (o.rate === undefined && o.placements === undefined), {
    message: 'a backlog is published whole before training: no rate, no shard moves',
  })
  .refine((o) => !o.sync || o.batch % o.workers === 0, {
    message: 'with sync the batch is the global one: a multiple of workers',
    path: ['batch'],
  })
  .refine(
    (o) =>
      o.placements === undefined ||
      (o.shardHosts !== undefined && o.placements.every((n) => n <= o.shardHosts! && n <= o.shards)),
    { message: 'placements need shardHosts; each at most shardHosts and shards', path: ['placements'] },
  )
  .refine((o) => o.shardThreads === undefined || o.shardHosts !== undefined, {
    message: 'shardThreads needs shardHosts',
    path: ['shardThreads'],
  });
export type ClusterBenchOptionsInput = z.input<typeof clusterBenchOptionsSchema>;
export type ClusterBenchOptions = z.infer<typeof clusterBenchOptionsSchema>;

/** Wiring that is not an option: the cluster launcher, cancellation and where progress lines go. */
export interface ClusterBenchDeps<A extends BenchActor = BenchActor> {
  /** Starts the local cluster and reads its actors (the CLI's launcher; its logger is its own). */
  harness: ClusterHarness<A>;
  signal?: AbortSignal;
  /** Progress lines (the CLI sends them to stderr; stdout carries only the JSON line). */
  progress?: (line: string) => void;
}

/**
 * Timings the bench needs per batch and the roles do not report yet, by package and field.
 * The bench fills what it can from outside (tap, /proc) and names the rest here, so the gap is
 * visible in every result instead of silently missing.
 */
export const missingTimings: readonly string[] = [
  '@freshet/worker WorkerStatus: no per-batch timings; wanted `timings.{encodeMs,pullMs,computeMs,pushMs,batchMs}` (p50/p99/mean) — compute is therefore estimated from worker CPU per batch',
  '@freshet/shard ShardStatus: no `timings.applyMs` (optimizer apply per push) nor `timings.walMs` (group commit) — both are inside the push time the tap measures',
  '@freshet/shard ShardStatus: no `timings.deltaMs` (takeDelta + encode + publish per delta message)',
  '@freshet/serving ReplicaStats: no `applyMs` per delta nor a rows-applied counter — serving apply is estimated from serving CPU per delta row',
];

const execFileP = promisify(execFile);

const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;
const r4 = (x: number) => Math.round(x * 10_000) / 10_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Learned {
  examples: number;
  /** Examples that will never train (dead-lettered, ignored): they still count as handled. */
  handled: number;
  batches: number;
}

async function workerTotals<A extends BenchActor>(
  lc: BenchCluster<A>,
  h: ClusterHarness<A>,
): Promise<{ totals: Learned; actors: A[] }> {
  const actors = await h.discover(lc.nc, { cluster: lc.cluster, roles: ['worker'], maxWaitMs: 120 });
  const totals = { examples: 0, handled: 0, batches: 0 };
  for (const a of actors) {
    const w = h.workerView(a);
    const c = (a.status.counters ?? {}) as Record<string, unknown>;
    const extra =
      (typeof c.deadLettered === 'number' ? c.deadLettered : 0) +
      (typeof c.ignored === 'number' ? c.ignored : 0);
    totals.examples += w.examples ?? 0;
    totals.handled += (w.examples ?? 0) + extra;
    totals.batches += typeof a.status.batches === 'number' ? a.status.batches : 0;
  }
  return { totals, actors };
}

interface PhaseResult {
  events: number;
  /** Wall ms from the first publish (a backlog: from the workers running) until every event was learned. */
  ms: number;
  publishMs: number;
  /** Learned examples over time (ms since phase start). */
  samples: Array<{ t: number; examples: number }>;
  batches: number;
  /** Shard moves made during the phase (`placements`). */
  moves?: Array<{ at_examples: number; hosts: number; moved: number; ms: number }>;
}

/**
 * Publishes `passes` × the data (paced at `rate` when given) while polling the workers, and
 * resolves once they have learned every published event.
 */
async function runPhase<A extends BenchActor>(
  lc: BenchCluster<A>,
  o: ClusterBenchOptions,
  p: {
    passes: number;
    rate?: number;
    /** Examples to learn (Criteo: events handled, dead letters included; else labelled examples). */
    events: number;
    countBy: 'handled' | 'examples';
    tag: string;
    deadline: number;
    /** Host counts to move the shards to at equal fractions of the examples (after the first). */
    placements?: number[];
    /** Publish everything first, then start the workers with this (the clock starts after). */
    startWorkers?: () => Promise<void>;
    /** Called when the clock starts (a backlog's CPU is measured from there). */
    clockStarted?: () => void;
    /** Compress the events with this dictionary. */
    dictionary?: BenchDictionary | undefined;
  },
  deps: ClusterBenchDeps<A>,
): Promise<PhaseResult> {
  const before = (await workerTotals(lc, deps.harness)).totals;
  // shard moves under load: each starts when its share of the examples is learned
  const moves: NonNullable<PhaseResult['moves']> = [];
  let moving: Promise<void> | undefined;
  let nextMove = 1;
  const h = deps.harness;
  const maybeMove = (learned: number) => {
    const steps = p.placements;
    if (!steps || !h.place || moving || nextMove >= steps.length) return;
    if (learned < (nextMove / steps.length) * p.events) return;
    const hosts = steps[nextMove++]!;
    moving = h.place(lc, hosts).then(
      (r) => {
        moves.push({ at_examples: learned, hosts, moved: r.moved, ms: r.ms });
        deps.progress?.(`${p.tag}: shards moved to ${hosts} host(s) (${r.moved} moved, ${r.ms} ms)`);
        moving = undefined;
      },
      (e: unknown) => {
        publishError = e instanceof Error ? e : new Error(String(e));
      },
    );
  };
  const tPublish = performance.now();
  let published = 0;
  let publishMs = 0;
  let publishError: Error | undefined;
  const publishing = (async () => {
    for (let pass = 0; pass < p.passes; pass++) {
      const s = await runReplay({
        data: o.data,
        ...(o.spec !== undefined ? { spec: o.spec } : {}),
        nats: lc.nc,
        cluster: lc.cluster,
        partitions: o.partitions,
        ensure: false,
        encoding: o.encoding,
        ...(p.dictionary ? { compression: { dictionary: p.dictionary.dictionary } } : {}),
        idPrefix: `${p.tag}-${pass}-${Date.now().toString(36)}`,
        ...(p.rate !== undefined ? { rate: p.rate } : {}),
        ...(o.limit !== undefined ? { limit: o.limit } : {}),
        ...(deps.signal ? { signal: deps.signal } : {}),
      });
      if (s.failed > 0) throw new FreshetError('UNAVAILABLE', `${s.failed} events failed to publish`);
      published += s.acked + s.duplicates;
    }
    publishMs = performance.now() - tPublish;
  })().catch((e: unknown) => {
    publishError = e instanceof Error ? e : new Error(String(e));
  });
  if (p.startWorkers) {
    await publishing;
    if (publishError) throw publishError;
    await p.startWorkers();
  }
  const t0 = p.startWorkers ? performance.now() : tPublish;
  p.clockStarted?.();
  const samples: PhaseResult['samples'] = [];
  let last = before;
  let nextLog = 0;
  let lastChange = 0;
  const stallMs = 40_000;
  for (;;) {
    if (publishError) throw publishError;
    if (deps.signal?.aborted) throw new FreshetError('SHUTTING_DOWN', 'bench aborted');
    const { totals, actors } = await workerTotals(lc, deps.harness);
    // A status reply that missed the collection window would read as examples going backwards.
    if (actors.length < o.workers) {
      await sleep(30);
      continue;
    }
    const t = performance.now() - t0;
    samples.push({ t, examples: totals.examples - before.examples });
    maybeMove(totals[p.countBy] - before[p.countBy]);
    if (totals.handled !== last.handled || lastChange === 0) lastChange = performance.now();
    last = totals;
    if (publishMs > 0 && totals[p.countBy] - before[p.countBy] >= p.events) break;
    // Everything published and nothing learned for a while: report the stall instead of waiting out the deadline.
    if (publishMs > 0 && performance.now() - lastChange > stallMs) {
      throw new FreshetError(
        'TIMEOUT',
        `${p.tag}: workers stalled at ${totals[p.countBy] - before[p.countBy]}/${p.events} ${p.countBy === 'handled' ? 'events' : 'examples'} learned ` +
          `(all ${published} published and acked by JetStream; no progress for ${stallMs / 1000} s)`,
      );
    }
    if (performance.now() > p.deadline) {
      throw new FreshetError(
        'TIMEOUT',
        `${p.tag}: ${totals[p.countBy] - before[p.countBy]}/${p.events} ${p.countBy === 'handled' ? 'events' : 'examples'} learned before the deadline ` +
          `(published ${published})`,
      );
    }
    if (t >= nextLog) {
      deps.progress?.(
        `${p.tag}: learned ${totals.examples - before.examples}/${p.events} in ${r1(t / 1000)} s`,
      );
      nextLog = t + 2000;
    }
    await sleep(30);
  }
  await publishing;
  await moving;
  return {
    moves,
    events: p.events,
    ms: samples[samples.length - 1]!.t,
    publishMs,
    samples,
    batches: last.batches - before.batches,
  };
}

/** Rate between 10% and 90% of the examples (interpolated): the steady part of a phase. */
function steadyRate(samples: PhaseResult['samples'], total: number): number | null {
  const at = (x: number): number | undefined => {
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1]!;
      const b = samples[i]!;
      if (b.examples >= x && b.examples > a.examples) {
        return a.t + ((x - a.examples) / (b.examples - a.examples)) * (b.t - a.t);
      }
    }
    return undefined;
  };
  const t1 = at(total * 0.1);
  const t9 = at(total * 0.9);
  if (t1 === undefined || t9 === undefined || t9 <= t1) return null;
  return (total * 0.8) / ((t9 - t1) / 1000);
}

async function servingFreshness<A extends BenchActor>(
  lc: BenchCluster<A>,
  h: ClusterHarness<A>,
): Promise<{ p50: number | null; p99: number | null; count: number }> {
  const actors = await h.discover(lc.nc, { cluster: lc.cluster, roles: ['serving'], maxWaitMs: 150 });
  let p50: number | null = null;
  let p99: number | null = null;
  let count = 0;
  // Several nodes replicate the same deltas: the slowest node is what a user may hit.
  for (const a of actors) {
    const v = h.servingView(a);
    const c =
      typeof (a.status.freshness as Record<string, unknown> | undefined)?.count === 'number'
        ? ((a.status.freshness as Record<string, number>).count ?? 0)
        : 0;
    count += c;
    if (v.freshnessP50Ms !== null) p50 = Math.max(p50 ?? 0, v.freshnessP50Ms);
    if (v.freshnessP99Ms !== null) p99 = Math.max(p99 ?? 0, v.freshnessP99Ms);
  }
  return { p50, p99, count };
}

/** A serving node's share of the model and of the bus, from its status. */
function servingNode(status: Record<string, unknown>) {
  const replica = (status.replica ?? {}) as Record<string, unknown>;
  const slice = status.slice as { index: number; count: number } | null | undefined;
  const num = (v: unknown) => (typeof v === 'number' ? v : null);
  return {
    id: typeof status.id === 'string' ? status.id : '',
    slice: slice ? `${slice.index}/${slice.count}` : null,
    rows: num(replica.rows),
    deltas_applied: num(replica.deltasApplied),
    delta_messages: num(replica.deltaMessages),
    delta_mb: typeof replica.deltaBytes === 'number' ? r2(replica.deltaBytes / 1e6) : null,
  };
}

function sum(xs: Array<number | null>): number {
  return xs.reduce<number>((a, b) => a + (b ?? 0), 0);
}

function perBatch(
  batches: number,
  examples: number,
  wallMs: number,
  workers: number,
  cpu: Record<string, number>,
  tap: WireTapReport | undefined,
  deltaRowsServing: number | null,
): Record<string, unknown> {
  const b = Math.max(1, batches);
  const cpuMs = (role: string) => (cpu[role] !== undefined ? r2((cpu[role] * 1000) / b) : null);
  const out: Record<string, unknown> = {
    batches,
    examples_per_batch: r1(examples / b),
    // Each worker runs its batches one after another (pipelined): its wall time per batch.
    wall_ms: r2((wallMs * workers) / b),
    cpu_ms: {
      worker: cpuMs('worker'),
      shard: cpuMs('shard'),
      serving: cpuMs('serving'),
      nats: cpuMs('nats'),
      bench: cpuMs('bench'),
    },
  };
  if (tap) {
    out.pull = {
      requests: r2(tap.pull.count / b),
      at_shard_p50_ms: tap.pull.p50Ms,
      at_shard_p99_ms: tap.pull.p99Ms,
      at_shard_mean_ms: tap.pull.meanMs,
      reply_kb: r1(tap.pull.replyBytes / b / 1024),
    };
    out.push = {
      requests: r2(tap.push.count / b),
      rows: r1(tap.push.rows / b),
      kb: r1(tap.push.bytes / b / 1024),
      // Decode + optimizer apply + WAL group commit + queueing at the shard, as seen on the bus.
      at_shard_p50_ms: tap.push.p50Ms,
      at_shard_p99_ms: tap.push.p99Ms,
      at_shard_mean_ms: tap.push.meanMs,
    };
    out.delta = {
      messages: r2(tap.delta.count / b),
      rows: r1(tap.delta.rows / b),
      kb: r1(tap.delta.bytes / b / 1024),
      emit_to_bus_p50_ms: tap.delta.p50Ms,
      emit_to_bus_p99_ms: tap.delta.p99Ms,
    };
  }
  if (deltaRowsServing !== null && cpu.serving !== undefined && tap && tap.delta.rows > 0) {
    // Serving nodes do little else during the bench than apply deltas (no score traffic).
    out.serving_apply = {
      cpu_us_per_delta_row: r2((cpu.serving * 1e6) / (tap.delta.rows * Math.max(1, deltaRowsServing))),
      estimated_ms: cpuMs('serving'),
    };
  }
  return out;
}

function isHistogram(v: unknown): v is ProgressiveHistogram {
  const h = v as ProgressiveHistogram | undefined;
  return typeof h === 'object' && h !== null && typeof h.bins === 'number' && Array.isArray(h.counts);
}

/**
 * One progressive AUC/logloss of every worker's examples, from their mergeable histograms
 * (`progressiveHistogram`), and one of their rolling windows (`progressiveWindowHistogram`):
 * averaging per-worker AUCs would be wrong, since one worker's scores may all sit below another's.
 */
export function mergeWorkerProgressive(statuses: ReadonlyArray<Record<string, unknown>>): {
  examples: number;
  auc: number | null;
  logloss: number | null;
  windowAuc: number | null;
  windowExamples: number | null;
} {
  const finite = (x: number) => (Number.isFinite(x) ? x : null);
  const all = statuses.map((s) => s.progressiveHistogram).filter(isHistogram);
  const win = statuses.map((s) => s.progressiveWindowHistogram).filter(isHistogram);
  const m = mergeProgressive(all);
  const w = win.length > 0 ? mergeProgressive(win) : undefined;
  return {
    examples: m.examples,
    auc: all.length > 0 ? finite(m.auc) : null,
    logloss: all.length > 0 ? finite(m.logloss) : null,
    windowAuc: w ? finite(w.auc) : null,
    windowExamples: w ? w.examples : null,
  };
}

/** A backlog's workers, started together once it is published. */
async function startWorkers(lc: BenchCluster, workers: number, progress: (m: string) => void) {
  if (!lc.add) throw new FreshetError('CONFIG', 'bench cluster: this harness cannot add workers');
  progress(`backlog published: starting ${workers} worker(s)`);
  await Promise.all(Array.from({ length: workers }, () => lc.add!('worker')));
}

/**
 * Runs the end-to-end cluster benchmark and returns ONE JSON-able object (the CLI prints it as
 * one line). Progress goes to `deps.progress`. The cluster is stopped (and its data directory
 * removed) before the PyTorch peer runs, so the two never compete for the cores.
 */
export async function runClusterBench<A extends BenchActor>(
  input: ClusterBenchOptionsInput,
  deps: ClusterBenchDeps<A>,
): Promise<Record<string, unknown>> {
  const h = deps.harness;
  const parsed = clusterBenchOptionsSchema.safeParse(input);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new FreshetError('CONFIG', `bench cluster: ${i?.path.join('.') ?? ''} ${i?.message ?? 'invalid'}`);
  }
  const o = parsed.data;
  const deadline = performance.now() + o.timeoutMs;
  // What the cluster will learn, joined as its workers join (the same window, no rate limit:
  // replay re-stamps events to now, so a user's clicks all land within seconds).
  const joiner = { windowMs: o.joinWindowMs, rateLimit: { enabled: false } };
  const data = await loadBenchData(o.data, {
    ...(o.spec !== undefined ? { spec: o.spec } : {}),
    ...(o.limit !== undefined ? { eventLimit: o.limit } : {}),
    joiner,
  });
  const dictionary = o.compressEvents
    ? await benchDictionary({ data: o.data, spec: o.spec, limit: o.limit, encoding: o.encoding })
    : undefined;
  // Criteo lines are one example event each; other data are counted in labelled examples.
  const perPass = data.kind === 'criteo' ? data.events : data.examples.length;
  const countBy = data.kind === 'criteo' ? 'handled' : 'examples';
  const progress = deps.progress ?? (() => undefined);
  const cores = cpus().length;
  const threads = o.threads ?? Math.max(1, Math.floor(cores / o.workers));
  const benchConfig = {
    ...benchModelConfig(o.model, data, { lr: o.lr, seed: o.seed, dim: o.dim }),
    densePartFloats: o.densePartFloats,
  };
  const modelConfig = o.sync ? { ...benchConfig, staleness: { policy: 'sync' as const } } : benchConfig;
  const workerBatch = o.sync ? o.batch / o.workers : o.batch;
  const cluster = `bench-${process.pid}-${Date.now().toString(36)}`;
  const dir = await mkdtemp(join(tmpdir(), 'freshet-bench-cluster-'));
  const statsWindowMs = 1000;
  const config: Record<string, unknown> = {
    cluster,
    dataDir: join(dir, 'data'),
    nats: { embedded: 1 },
    partitions: o.partitions,
    model: modelConfig as Record<string, unknown>,
    shards: {
      count: o.shards,
      ...(o.shardHosts !== undefined ? { hosts: o.shardHosts } : {}),
      ...(o.shardThreads !== undefined ? { threads: o.shardThreads } : {}),
      options: {
        halfDeltas: o.halfDeltas,
        int8Deltas: o.int8Deltas,
        deltaIntervalMs: o.deltaIntervalMs,
        hostDeltas: o.hostDeltas,
      },
    },
    workers: {
      // a backlog's workers start once it is published (phase 1)
      count: o.backlog ? 0 : o.workers,
      options: {
        batch: { size: workerBatch },
        compute: { threads },
        joiner,
        // Close windows by wall time soon after they end, so the last negatives do not wait.
        joinClock: { everyMs: 100, lagMs: 200 },
        dense: { mode: o.dense, syncExamples: o.denseSyncExamples, halfFlush: o.halfFlush },
        halfPull: o.halfPull,
        int8Pull: o.int8Pull,
        halfPush: o.halfPush,
        int8Push: o.int8Push,
        pullSessions: o.pullSessions,
        hostRouting: { enabled: o.hostRouting, lingerMs: o.hostLingerMs },
        ...(o.inFlight !== undefined ? { maxInFlightBatches: o.inFlight } : {}),
        ...(o.overlapPush !== undefined ? { overlapPush: o.overlapPush } : {}),
        ...(o.window !== undefined ? { metrics: { window: o.window } } : {}),
      },
    },
    serving: {
      count: o.serving,
      options: { http: { enabled: false }, statsWindowMs },
      ...(o.servingSlices !== undefined ? { slices: o.servingSlices } : {}),
    },
    metrics: { enabled: false },
  };

  const tStart = performance.now();
  progress(`starting ${o.shards} shard(s), ${o.workers} worker(s), ${o.serving} serving node(s)`);
  let lc: BenchCluster<A> | undefined;
  let tap: WireTap | undefined;
  let tapNc: Awaited<ReturnType<typeof connectNats>> | undefined;
  let cpu: CpuMeter | undefined;
  let shardCpu: CpuMeter | undefined;
  const result: Record<string, unknown> = {};
  try {
    lc = await h.start(config, {
      source: 'bench cluster',
      baseDir: dir,
      ...(deps.signal ? { signal: deps.signal } : {}),
      readyTimeoutMs: 120_000,
      stopGraceMs: 5000,
      restartOnExit: false,
    });
    const cl = lc;
    const startupS = (performance.now() - tStart) / 1000;
    cpu = new CpuMeter(() => [
      ...cl.processes.map((p) => ({ group: p.role, pid: p.pid })),
      ...cl.natsServers.map((s) => ({ group: 'nats', pid: s.pid })),
      { group: 'bench', pid: process.pid },
    ]);
    cpu.start(250);
    // Per shard process too: a hot shard (a whole dense tensor's owner) shows as max ≫ mean.
    shardCpu = new CpuMeter(() =>
      cl.processes.filter((p) => p.role === 'shard').map((p) => ({ group: p.id, pid: p.pid })),
    );
    shardCpu.start(250);
    if (o.tap) {
      tapNc = await connectNats({ servers: cl.natsUrls }, `freshet-bench-tap-${cluster}`);
      // A frame does not say whether its tables are dense: the model's spec does.
      const dense = compileModelConfig(modelConfig)
        .spec.tables.map((t, i) => (t.kind === 'dense' ? i : -1))
        .filter((i) => i >= 0);
      tap = new WireTap(tapNc, cluster, new Set(dense), o.tapFeedback);
      // the server has the tap's subscriptions before the first event is published: a tap that
      // missed the first batches of a short run would report too few requests per batch
      await tapNc.flush();
    }

    if (o.placements) {
      if (!h.place) throw new FreshetError('CONFIG', 'bench cluster: this harness cannot move shards');
      // where the shards start: not under load
      const r = await h.place(cl, o.placements[0]!);
      progress(`shards on ${o.placements[0]} of ${o.shardHosts} host(s) (${r.moved} moved, ${r.ms} ms)`);
    }
    // Phase 1: throughput (and first-pass progressive quality).
    cpu.mark();
    shardCpu.mark();
    const events = perPass * o.passes;
    const p1 = await runPhase(
      cl,
      o,
      {
        passes: o.passes,
        ...(o.rate !== undefined ? { rate: o.rate } : {}),
        events,
        countBy,
        tag: 'throughput',
        deadline,
        dictionary,
        ...(o.placements ? { placements: o.placements } : {}),
        ...(o.backlog
          ? {
              startWorkers: () => startWorkers(cl, o.workers, progress),
              // the publishing and the workers' start-up are not in the timed window either
              clockStarted: () => {
                cpu?.mark();
                shardCpu?.mark();
              },
            }
          : {}),
      },
      deps,
    );
    const cpu1 = cpu.seconds();
    const perShard = shardCpu.seconds();
    // the tap's copies of the last pushes and their replies may still be in its socket when the
    // last ack is in: a round trip on its connection lets it read them before it is summed
    await tapNc?.flush();
    const tap1 = tap?.summary();
    const fresh1 = await servingFreshness(cl, h);
    const actors1 = await cl.actors();
    const shards = actors1.filter((a) => a.role === 'shard').map((a) => h.shardView(a));
    const workers = actors1.filter((a) => a.role === 'worker');
    const wv = workers.map((a) => h.workerView(a));
    const merged = mergeWorkerProgressive(workers.map((a) => a.status));
    const counters: Record<string, number> = {};
    for (const a of workers) {
      for (const [k, v] of Object.entries((a.status.counters ?? {}) as Record<string, unknown>)) {
        if (typeof v === 'number')
          counters[k] = k === 'maxStaleness' ? Math.max(counters[k] ?? 0, v) : (counters[k] ?? 0) + v;
      }
    }
    const rejects: Record<string, number> = {};
    for (const a of actors1.filter((x) => x.role === 'shard')) {
      for (const [k, v] of Object.entries((a.status.rejects ?? {}) as Record<string, unknown>)) {
        if (typeof v === 'number') rejects[k] = (rejects[k] ?? 0) + v;
      }
    }
    const seconds = p1.ms / 1000;
    const cpuTotal = Object.values(cpu1).reduce((a, b) => a + b, 0);
    const auc = merged.auc;
    const ll = merged.logloss;
    Object.assign(result, {
      bench: 'cluster',
      data: o.data,
      model: o.model,
      seed: o.seed,
      fields: (modelConfig.features.fields ?? []).map((f) => `${f.name}:${f.kind}`),
      shards: o.shards,
      shard_hosts: o.shardHosts ?? null,
      shard_threads: o.shardThreads ?? null,
      placements: o.placements ?? null,
      shard_moves: p1.moves ?? [],
      workers: o.workers,
      serving: o.serving,
      serving_slices: o.servingSlices ?? null,
      // each serving node: its slice, the rows it holds, the delta messages and bytes it received
      serving_nodes: actors1
        .filter((a) => a.role === 'serving')
        .map((a) => servingNode(a.status))
        .sort((x, y) => x.id.localeCompare(y.id)),
      partitions: o.partitions,
      batch: o.batch,
      sync: o.sync,
      worker_batch: workerBatch,
      // the worker's default is 1 (results without this field predate it: 2 from batch 128)
      in_flight: o.inFlight ?? 1,
      // the worker's default (results without this field predate it: off)
      overlap_push: o.overlapPush ?? !(o.sync || o.dense === 'replica'),
      lr: o.lr,
      optimizer: modelConfig.optimizer ?? null,
      threads_per_worker: threads,
      ...busReport(o),
      event_dictionary: dictionary
        ? {
            id: dictionary.id,
            bytes: dictionary.dictionary.length,
            skip: dictionary.skip,
            samples: dictionary.samples,
          }
        : null,
      passes: o.passes,
      rate: o.rate ?? null,
      backlog: o.backlog,
      backend: wv[0]?.backend ?? null,
      startup_s: r2(startupS),
      examples: p1.events,
      seconds: r2(seconds),
      examples_per_s: Math.round(p1.events / seconds),
      steady_examples_per_s: (() => {
        const s = steadyRate(p1.samples, p1.events);
        return s === null ? null : Math.round(s);
      })(),
      publish_s: r2(p1.publishMs / 1000),
      freshness_p50_ms: null as number | null,
      freshness_p99_ms: null as number | null,
      freshness_load_events_per_s: null as number | null,
      saturated_freshness_p50_ms: fresh1.p50,
      saturated_freshness_p99_ms: fresh1.p99,
      // One AUC of every worker's examples (merged score histograms), never a mean of AUCs.
      progressive_auc: auc === null ? null : r4(auc),
      progressive_logloss: ll === null ? null : r4(ll),
      progressive_examples: merged.examples,
      worker_auc: wv.map((w) => (w.auc === null ? null : r4(w.auc))),
      worker_examples: wv.map((w) => w.examples),
      ...(o.window !== undefined
        ? {
            window: o.window,
            window_auc: merged.windowAuc === null ? null : r4(merged.windowAuc),
            window_examples: merged.windowExamples,
          }
        : {}),
      staleness_p50: Math.max(0, ...shards.map((s) => s.stalenessP50 ?? 0)),
      staleness_p99: Math.max(0, ...shards.map((s) => s.stalenessP99 ?? 0)),
      staleness_max: counters.maxStaleness ?? null,
      rejected_pushes: Object.values(rejects).reduce((a, b) => a + b, 0),
      rejects,
      shard_rows: sum(shards.map((s) => s.rows)),
      shard_bytes: sum(shards.map((s) => s.memoryBytes)),
      worker_counters: counters,
      cpu_s: cpu1,
      cpu_s_total: r2(cpuTotal),
      cpu_s_per_shard: Object.fromEntries(Object.entries(perShard).map(([k, v]) => [k, r2(v)])),
      cpu_utilisation: r2(cpuTotal / (seconds * cores)),
      cpu_ms_per_example: r4((cpuTotal * 1000) / p1.events),
      per_batch: perBatch(
        p1.batches,
        p1.events,
        p1.ms,
        o.workers,
        cpu1,
        tap1,
        o.serving > 0 ? o.serving : null,
      ),
      tap: tap1 ?? null,
      missing_timings: missingTimings,
    });
    // Stage times the workers report themselves (p50/p90/ewma ms per batch), when they do.
    const wt = workers.map((a) => a.status.timing).filter((x) => x !== undefined);
    if (wt.length > 0)
      (result.per_batch as Record<string, unknown>).worker_reported = wt.length === 1 ? wt[0] : wt;
    result.missing_timings = missingTimings.filter(
      (m) => !(wt.length > 0 && m.startsWith('@freshet/worker')),
    );
    progress(
      `throughput: ${String(result.examples_per_s)} examples/s, AUC ${String(result.progressive_auc)}, ` +
        `${p1.batches} batches`,
    );

    // Phase 2: freshness at a sustainable load (the data again, paced below the measured rate).
    const freshRate =
      o.rate ?? (o.freshnessLoad > 0 ? (result.examples_per_s as number) * o.freshnessLoad : 0);
    if (o.serving > 0 && o.rate === undefined && freshRate > 0) {
      // The serving window must hold only this phase: wait out two windows of quiet first.
      await sleep(2 * statsWindowMs + 200);
      let p2: PhaseResult | undefined;
      try {
        p2 = await runPhase(
          cl,
          o,
          { passes: 1, rate: freshRate, events: perPass, countBy, tag: 'freshness', deadline, dictionary },
          deps,
        );
      } catch (e) {
        // The throughput figures stand; say why freshness is missing.
        result.freshness_error = (e as Error).message;
      }
      const f = await servingFreshness(cl, h);
      result.freshness_p50_ms = f.p50;
      result.freshness_p99_ms = f.p99;
      result.freshness_samples = f.count;
      result.freshness_load_events_per_s = Math.round(freshRate);
      result.freshness_phase_examples_per_s = p2 ? Math.round(p2.events / (p2.ms / 1000)) : null;
    } else if (o.serving > 0) {
      result.freshness_p50_ms = fresh1.p50;
      result.freshness_p99_ms = fresh1.p99;
      result.freshness_samples = fresh1.count;
      result.freshness_load_events_per_s = o.rate ?? null;
    }
    result.roles_reported = Object.fromEntries(
      actors1.map((a) => [a.id, (a.status.timings as unknown) ?? null]),
    );
    // steps, pushes summed, steps closed by the timeout (after the throughput phase)
    if (o.sync) {
      result.sync_steps = Object.fromEntries(
        actors1.filter((a) => a.role === 'shard').map((a) => [a.id, (a.status.sync as unknown) ?? null]),
      );
    }
  } finally {
    tap?.stop();
    await tapNc?.close().catch(() => undefined);
    cpu?.stop();
    shardCpu?.stop();
    await lc?.stop();
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }

  result.machine = await machineInfo(o.python);
  if (!o.peer) return result;
  progress('running the PyTorch peer on the same data');
  // The same passes, batch and lr, with every core (the whole machine, like the cluster).
  const run = await runExactPeer({
    model: o.model,
    data,
    batch: o.batch,
    lr: o.lr,
    passes: o.passes,
    threads: cpus().length,
    seed: o.seed,
    dim: o.dim,
    overridden: false,
    peerInit: o.peerInit,
  });
  if (!run.ok) {
    result.peer = run.peer;
    return result;
  }
  const peer = run.json;
  result.peer = run.peer;
  result.peer_exact = run.exact;
  result.torch = peer;
  const teps = typeof peer.examples_per_s === 'number' ? peer.examples_per_s : undefined;
  const tauc = typeof peer.progressive_auc_pass1 === 'number' ? peer.progressive_auc_pass1 : undefined;
  const tll = typeof peer.progressive_logloss_pass1 === 'number' ? peer.progressive_logloss_pass1 : undefined;
  const ours = result.examples_per_s as number;
  const auc = result.progressive_auc as number | null;
  const ll = result.progressive_logloss as number | null;
  result.vs_torch = {
    examples_per_s: teps ? r4(ours / teps) : null,
    auc: tauc !== undefined && auc !== null ? r4(auc / tauc) : null,
    auc_delta: tauc !== undefined && auc !== null ? r4(auc - tauc) : null,
    logloss_delta: tll !== undefined && ll !== null ? r4(ll - tll) : null,
  };
  return result;
}

async function machineInfo(python: string): Promise<Record<string, unknown>> {
  const c = cpus();
  let nats: string | null = null;
  try {
    nats = natsServerVersion(findNatsServer());
  } catch {
    nats = null;
  }
  let torch: string | null = null;
  try {
    const r = await execFileP(python, ['-c', 'import torch; print(torch.__version__)'], { timeout: 60_000 });
    torch = r.stdout.trim();
  } catch {
    torch = null;
  }
  let commit: string | null = null;
  try {
    commit = (await execFileP('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot() })).stdout.trim();
  } catch {
    commit = null;
  }
  return {
    cpus: c.length,
    cpu_model: c[0]?.model ?? null,
    node: process.version,
    nats_server: nats,
    torch,
    commit,
    at: new Date().toISOString(),
  };
}
