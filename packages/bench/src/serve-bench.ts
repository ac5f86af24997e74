import { performance } from 'node:perf_hooks';
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { NatsConnection, Subscription } from 'nats';
import { createModel, type Model } from '@freshet/model';
import { connectNats, parseReadyLine, startNatsServer, type NatsServerHandle } from '@freshet/nats';
import {
  decodeSnapshotRequest,
  encodeDelta,
  encodeSnapshotPage,
  featureId,
  initRow,
  shardOfDense,
  shardOfKey,
  subjects,
  xorshift32,
  type DeltaTable,
} from '@freshet/protocol';
import type { BenchClientJob, BenchClientResult, ClientMessage } from './serve-client.js';
import { createScorer, ServingNode } from '@freshet/serving';

/** Options of {@link runServeBench}. */
export interface ServeBenchOptions {
  /** Offered request rate of the fixed-rate phases (requests/s). */
  rate?: number;
  /** Measured seconds per phase (after a warm-up). */
  seconds?: number;
  warmupSeconds?: number;
  candidates?: number;
  /** Closed-loop concurrency of the max-throughput phases. */
  concurrency?: number;
  /** Deltas per second per shard while measuring (64 rows each), as a learning cluster sends. */
  deltasPerSecond?: number;
  /** An existing nats-server; default: start a local one. */
  url?: string;
  /** Scorer of the serving node under load (`auto` = the fast path for wide-deep). */
  scorer?: 'auto' | 'model';
  /** Which load phases to run (default all). */
  phases?: ('http' | 'http-max' | 'nats' | 'nats-max')[];
  /** Skip the in-process scorer comparison. */
  skipInProcess?: boolean;
  /** Matrix products of the fast path under load. */
  gemm?: 'tfjs' | 'js';
  /**
   * Sliced serving (serving option `slice`): the node under load holds slice 0 of this many and
   * asks the others, one node each in a process of its own, for their rows. 1: the whole model.
   */
  slices?: number;
}

/** Stand-in shards: two, or one per slice. */
const MIN_SHARDS = 2;
const CONTEXT_FIELDS = 22;
const USERS = 1000;
const ITEMS = 10_000;

/** The bench's wide&deep: 26 sparse fields × dim 16, MLP 418→128→64→1 (as the train bench). */
export function serveBenchModelConfig() {
  const cat = (name: string) => ({ kind: 'categorical' as const, name });
  return {
    name: 'serve-bench',
    kind: 'wide-deep' as const,
    embeddingDim: 16,
    hidden: [128, 64],
    features: {
      fields: [
        cat('user'),
        cat('item'),
        cat('item_cat'),
        cat('item_brand'),
        ...Array.from({ length: CONTEXT_FIELDS }, (_, i) => cat(`c${i + 1}`)),
        { kind: 'numeric' as const, name: 'hour' },
        { kind: 'numeric' as const, name: 'price', transform: 'log1p' as const },
      ],
    },
  };
}

export function requestBodies(n: number, candidates: number): string[] {
  const r = xorshift32(7);
  return Array.from({ length: n }, () => {
    const context: Record<string, string | number> = { hour: Math.floor(r() * 24) };
    for (let c = 1; c <= CONTEXT_FIELDS; c++) context[`c${c}`] = `v${Math.floor(r() * 50)}`;
    return JSON.stringify({
      user: `u${Math.floor(r() * USERS)}`,
      context,
      candidates: Array.from({ length: candidates }, () => {
        const item = Math.floor(r() * ITEMS);
        return {
          item: `i${item}`,
          features: { item_cat: `k${item % 100}`, item_brand: `b${item % 500}`, price: (item % 97) + 0.5 },
        };
      }),
    });
  });
}

/**
 * A stand-in for the shards: it answers snapshot pages of pre-filled rows (every user, item and
 * context value of the bench) and publishes deltas at a steady rate with probe timestamps.
 */
export class BenchShards {
  private readonly data: { keys: Uint32Array; values: Float32Array; dim: number }[][] = [];
  private subs: Subscription[] = [];
  private timer: NodeJS.Timeout | undefined;
  private seq: number[] = [];
  private readonly allKeys: Uint32Array;

  constructor(
    private readonly nc: NatsConnection,
    private readonly cluster: string,
    private readonly model: Model,
    private readonly shards = MIN_SHARDS,
  ) {
    const ids: string[][] = [
      ['user', ...Array.from({ length: USERS }, (_, i) => `u${i}`)],
      ['item', ...Array.from({ length: ITEMS }, (_, i) => `i${i}`)],
      ['item_cat', ...Array.from({ length: 100 }, (_, i) => `k${i}`)],
      ['item_brand', ...Array.from({ length: 500 }, (_, i) => `b${i}`)],
      ...Array.from({ length: CONTEXT_FIELDS }, (_, c) => [
        `c${c + 1}`,
        ...Array.from({ length: 50 }, (_, i) => `v${i}`),
      ]),
    ];
    const keys: number[] = [];
    const k = new Uint32Array(2);
    for (const [field, ...values] of ids)
      for (const v of values) {
        featureId(field!, v, k);
        keys.push(k[0]!, k[1]!);
      }
    this.allKeys = new Uint32Array(keys);
    const spec = model.spec;
    for (let s = 0; s < shards; s++) {
      this.seq.push(0);
      this.data.push(
        spec.tables.map((t, ti) => {
          if (t.kind === 'dense') {
            if (shardOfDense(t, shards) !== s)
              return { keys: new Uint32Array(), values: new Float32Array(), dim: t.dim };
            const values = new Float32Array(t.dim);
            initRow(t.init, 0, 0, values);
            return { keys: new Uint32Array(2), values, dim: t.dim };
          }
          const mine: number[] = [];
          for (let i = 0; i < this.allKeys.length; i += 2)
            if (shardOfKey(ti, this.allKeys[i]!, this.allKeys[i + 1]!, shards) === s)
              mine.push(this.allKeys[i]!, this.allKeys[i + 1]!);
          const ks = new Uint32Array(mine);
          const values = new Float32Array((ks.length / 2) * t.dim);
          for (let i = 0; i < ks.length / 2; i++)
            initRow(
              { kind: 'normal', std: 0.1, seed: 5 + ti },
              ks[2 * i]!,
              ks[2 * i + 1]!,
              values,
              i * t.dim,
              t.dim,
            );
          return { keys: ks, values, dim: t.dim };
        }),
      );
    }
  }

  async start(): Promise<void> {
    const s = subjects(this.cluster);
    for (let shard = 0; shard < this.shards; shard++) {
      this.subs.push(
        this.nc.subscribe(s.snapshot(shard), {
          callback: (_e, msg) => {
            const req = decodeSnapshotRequest(msg.data);
            const d = this.data[shard]![req.t]!;
            const n = d.keys.length / 2;
            const end = Math.min(n, req.cursor + req.limit);
            msg.respond(
              encodeSnapshotPage({
                t: req.t,
                dim: d.dim,
                version: this.seq[shard]!,
                seq: this.seq[shard]!,
                next: end < n ? end : null,
                keys: d.keys.slice(2 * req.cursor, 2 * end),
                values: d.values.slice(req.cursor * d.dim, end * d.dim),
              }),
            );
          },
        }),
      );
    }
    await this.nc.flush();
  }

  /** Publishes `perSecond` deltas per shard, 64 random emb rows each, stamped with probe times. */
  startDeltas(perSecond: number): void {
    if (perSecond <= 0) return;
    const r = xorshift32(11);
    const s = subjects(this.cluster);
    const emb = this.model.layout.emb!;
    const dim = this.model.spec.tables[emb]!.dim;
    this.timer = setInterval(() => {
      for (let shard = 0; shard < this.shards; shard++) {
        const d = this.data[shard]![emb]!;
        const n = d.keys.length / 2;
        const keys = new Uint32Array(128);
        const values = new Float32Array(64 * dim);
        for (let i = 0; i < 64; i++) {
          const row = Math.floor(r() * n);
          keys[2 * i] = d.keys[2 * row]!;
          keys[2 * i + 1] = d.keys[2 * row + 1]!;
          for (let j = 0; j < dim; j++) values[i * dim + j] = (r() - 0.5) * 0.2;
        }
        const seq = ++this.seq[shard]!;
        const tables: DeltaTable[] = [{ t: emb, dim, keys, values, deadKeys: new Uint32Array() }];
        const now = Date.now();
        this.nc.publish(
          s.delta(shard),
          encodeDelta({ shard, seq, version: seq, ts: now, eventTs: [now], tables }),
        );
      }
    }, 1000 / perSecond);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const sub of this.subs) sub.unsubscribe();
  }
}

/** A serving node in a process of its own (serving's bin), resolved once it is ready. */
async function startSliceNode(options: Record<string, unknown>): Promise<ChildProcess> {
  const bin = fileURLToPath(new URL('../../serving/dist/bin.js', import.meta.url));
  const child = spawn(process.execPath, [bin, '--options-json', JSON.stringify(options)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`slice node not ready in 60 s: ${err}`)), 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (parseReadyLine(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`slice node exited ${code}: ${err}`));
    });
  });
  child.removeAllListeners('exit');
  return child;
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/**
 * Runs one load phase in a forked process and measures this process's CPU (the serving node's,
 * plus the stand-in shards' few deltas) over the same time, in % of one core.
 */
function runClient(job: BenchClientJob): Promise<BenchClientResult & { server_cpu_pct: number }> {
  return new Promise((resolve, reject) => {
    const child = fork(new URL('./serve-client.js', import.meta.url), [], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let cpu0 = process.cpuUsage();
    let t0 = performance.now();
    let settled = false;
    child.on('message', (m: ClientMessage) => {
      if (m.kind === 'measuring') {
        // Server CPU counts over the generator's measured window, not its warm-up.
        cpu0 = process.cpuUsage();
        t0 = performance.now();
        return;
      }
      settled = true;
      const c = process.cpuUsage(cpu0);
      const server_cpu_pct =
        Math.round(((c.user + c.system) / 1000 / Math.max(1, performance.now() - t0)) * 1000) / 10;
      if (m.ok && m.result) resolve({ ...m.result, server_cpu_pct });
      else reject(new Error(m.error ?? 'bench client failed'));
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (!settled) reject(new Error(`bench client exited with ${code} before reporting`));
    });
    child.send(job);
  });
}

function summary(r: BenchClientResult & { server_cpu_pct: number }) {
  return {
    rps: r.rps,
    p50_ms: r.p50_ms,
    p99_ms: r.p99_ms,
    max_ms: r.max_ms,
    errors: r.errors,
    server_cpu_pct: r.server_cpu_pct,
    client_cpu_pct: r.cpu_pct,
    client_send_lag_p99_ms: r.send_lag_p99_ms,
  };
}

function quantiles(xs: number[]): { p50_ms: number; p99_ms: number } {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)] ?? 0;
  return { p50_ms: Math.round(q(0.5) * 1000) / 1000, p99_ms: Math.round(q(0.99) * 1000) / 1000 };
}

/**
 * The serve benchmark: a serving node with the bench's wide&deep (26 fields × 16, MLP 128-64),
 * fed by stand-in shards that keep publishing deltas, ranking `candidates` candidates per request
 * over HTTP and over NATS, at a fixed offered rate and at max (closed loop). Also times one
 * request's scoring in-process with the hand-written forward pass and with tfjs (model predict).
 * Returns one JSON-ready object: `rps`, `p50_ms`, `p99_ms` are HTTP at the fixed rate.
 */
export async function runServeBench(opts: ServeBenchOptions = {}): Promise<Record<string, unknown>> {
  const rate = opts.rate ?? 500;
  const seconds = opts.seconds ?? 5;
  const warmupSeconds = opts.warmupSeconds ?? 1;
  const candidates = opts.candidates ?? 100;
  const concurrency = opts.concurrency ?? 8;
  let server: NatsServerHandle | undefined;
  const url = opts.url ?? (server = await startNatsServer()).url;
  const nc = await connectNats({ servers: url }, 'freshet-serve-bench');
  const cluster = `bench-${process.pid}`;
  const config = serveBenchModelConfig();
  const model = createModel(config);
  const slices = opts.slices ?? 1;
  const nShards = Math.max(MIN_SHARDS, slices);
  const shards = new BenchShards(nc, cluster, model, nShards);
  const nodeOptions = (index: number) => ({
    cluster,
    nats: { servers: url },
    shards: nShards,
    model: config,
    scorer: opts.scorer ?? 'auto',
    gemm: opts.gemm ?? 'tfjs',
    limits: { maxCandidates: Math.max(1000, candidates) },
    ...(slices > 1 ? { slice: { index, count: slices } } : {}),
  });
  const node = new ServingNode(nodeOptions(0));
  const others: ChildProcess[] = [];
  try {
    await shards.start();
    const t0 = performance.now();
    await node.start();
    await node.whenReady();
    const syncMs = performance.now() - t0;
    // the other slices' nodes, each a process of its own (as they would be: other machines)
    for (let i = 1; i < slices; i++) others.push(await startSliceNode(nodeOptions(i)));
    const bodies = requestBodies(64, candidates);

    // One request's scoring, in-process: the hand-written pass (tfjs or JS products) vs predict.
    const inproc: Record<string, { p50_ms: number; p99_ms: number }> = {};
    const variants = [
      ['fast_tfjs', 'fast', 'tfjs'],
      ['fast_js', 'fast', 'js'],
      ['model_predict', 'model', 'tfjs'],
    ] as const;
    // (a sliced replica holds half the rows: the whole-model scorers would not find the rest)
    for (const [name, kind, gemm] of opts.skipInProcess || slices > 1 ? [] : variants) {
      const scorer = await createScorer(model, node.replica, {
        kind,
        gemm,
        fields: { user: 'user', item: 'item' },
      });
      const times: number[] = [];
      for (let i = 0; i < 300; i++) {
        const b = JSON.parse(bodies[i % bodies.length]!) as {
          user: string;
          context: Record<string, string | number>;
          candidates: { item: string; features: Record<string, string | number> }[];
        };
        const s = performance.now();
        scorer.score(b.user, b.context, b.candidates);
        if (i >= 50) times.push(performance.now() - s);
      }
      inproc[name] = quantiles(times);
    }

    shards.startDeltas(opts.deltasPerSecond ?? 20);
    const s = subjects(cluster);
    const phases = new Set(opts.phases ?? ['http', 'http-max', 'nats', 'nats-max']);
    const base = { bodies, concurrency, seconds, warmupSeconds };
    const phase = async (name: string, job: Omit<BenchClientJob, keyof typeof base>) =>
      phases.has(name as 'http') ? summary(await runClient({ ...base, ...job })) : undefined;
    const http = await phase('http', { transport: 'http', url: node.httpUrl!, target: '/v1/rank', rate });
    const httpMax = await phase('http-max', { transport: 'http', url: node.httpUrl!, target: '/v1/rank' });
    const nats = await phase('nats', { transport: 'nats', url, target: s.rank, rate });
    const natsMax = await phase('nats-max', { transport: 'nats', url, target: s.rank });
    const status = node.status();
    return {
      bench: 'serve',
      slices,
      // rows requests sent to other slices per ranking answered here (0 unsliced), and the
      // slices the rankings asked (what the requests would be without coalescing per turn)
      slice_requests_per_rank: status.slice
        ? Math.round((status.slice.requests / Math.max(1, status.requests.ok)) * 100) / 100
        : 0,
      slice_asks_per_rank: status.slice
        ? Math.round((status.slice.batches / Math.max(1, status.requests.ok)) * 100) / 100
        : 0,
      slice_failed: status.slice?.failed ?? 0,
      model: 'wide-deep',
      fields: 26,
      dim: 16,
      hidden: [128, 64],
      candidates,
      scorer: status.scorer,
      gemm: opts.gemm ?? 'tfjs',
      offered_rps: rate,
      rps: http?.rps ?? null,
      p50_ms: http?.p50_ms ?? null,
      p99_ms: http?.p99_ms ?? null,
      errors: http?.errors ?? null,
      // Where the CPU went at the offered rate (% of one core): the node's process, the generator.
      server_cpu_pct: http?.server_cpu_pct ?? null,
      client_cpu_pct: http?.client_cpu_pct ?? null,
      client_send_lag_p99_ms: http?.client_send_lag_p99_ms ?? null,
      target_p99_ms: 10,
      target_met: http ? http.p99_ms < 10 && http.rps >= rate * 0.98 && http.errors === 0 : null,
      http_max: httpMax ? { ...httpMax, concurrency } : null,
      nats: nats ?? null,
      nats_max: natsMax ? { ...natsMax, concurrency } : null,
      score_in_process: inproc,
      freshness_p50_ms: Math.round(status.freshness.p50Ms * 100) / 100,
      freshness_p99_ms: Math.round(status.freshness.p99Ms * 100) / 100,
      deltas_applied: status.replica.deltasApplied,
      replica_rows: status.replica.rows,
      snapshot_sync_ms: Math.round(syncMs),
      seconds_per_phase: seconds,
    };
  } finally {
    shards.stop();
    await Promise.all(others.map(stopChild));
    await node.stop();
    await nc.close();
    await server?.stop();
  }
}
