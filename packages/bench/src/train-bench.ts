import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  createModel,
  criteoDeepFmConfig,
  criteoPeerWideDeepConfig,
  criteoWideDeepConfig,
  parseCriteoLine,
  type EncodedBatch,
  type Example,
  type ModelConfigInput,
} from '@freshet/model';
import { FreshetError, type PullRequest, type PushTable } from '@freshet/protocol';
import { ShardCore } from '@freshet/shard';
import { ComputePool, exactAuc, logloss } from '@freshet/worker';
import { runTorchPeer } from './torch-peer.js';

/** Criteo models the train bench runs. */
export const trainBenchModels = ['wide-deep', 'wide-deep-peer', 'deepfm'] as const;
export type TrainBenchModel = (typeof trainBenchModels)[number];

const configOf: Record<TrainBenchModel, (o: Partial<ModelConfigInput>) => ModelConfigInput> = {
  'wide-deep': criteoWideDeepConfig,
  'wide-deep-peer': criteoPeerWideDeepConfig,
  deepfm: criteoDeepFmConfig,
};

/** Options of {@link runTrainBench} (the CLI's `freshet bench train`). */
export interface TrainBenchOptions {
  /** `criteo:PATH` (a Criteo TSV: label, I1..I13, C1..C26), PATH relative to the current directory. */
  data: string;
  /**
   * `wide-deep`: the PyTorch peer's model with an Adagrad-trained wide table
   * ({@link criteoWideDeepConfig}); `wide-deep-peer`: the peer's model and optimizers exactly
   * ({@link criteoPeerWideDeepConfig}); `deepfm`: {@link criteoDeepFmConfig} on the same features.
   * Default wide-deep.
   */
  model?: TrainBenchModel;
  /** Seed of the embedding and dense initialisation (default 0), to measure seed variance. */
  seed?: number;
  /** Config fields laid over the chosen model's (e.g. per-table optimizers); for experiments. */
  overrides?: Partial<ModelConfigInput>;
  batch?: number;
  lr?: number;
  passes?: number;
  /** Compute threads (default 2). */
  threads?: number;
  /** Batches between pull and apply at once (default: threads for batches ≥ 128, else 1). */
  pipeline?: number;
  /** Run the PyTorch peer in the same call (default true). */
  torch?: boolean;
}

function readCriteo(path: string): Example[] {
  const out: Example[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.length === 0) continue;
    const ex = parseCriteoLine(line);
    if (ex) out.push(ex);
  }
  return out;
}

/**
 * The worker's compute path in one process, without NATS: the Criteo file in order, each
 * mini-batch encoded, its rows pulled from an in-process shard (ShardCore: row store, Adam,
 * staleness), scored and differentiated in the piscina pool, and its gradients applied — the
 * predictions made before the update give the progressive AUC/logloss of the first pass. Then
 * runs the PyTorch peer on the same data and settings and reports the ratios. One JSON object.
 */
export async function runTrainBench(opts: TrainBenchOptions): Promise<Record<string, unknown>> {
  const m = /^criteo:(.+)$/.exec(opts.data);
  if (!m) throw new FreshetError('CONFIG', `--data must be criteo:PATH, got "${opts.data}"`);
  const path = resolve(m[1]!);
  const kind = opts.model ?? 'wide-deep';
  if (!trainBenchModels.includes(kind))
    throw new FreshetError(
      'CONFIG',
      `--model must be one of ${trainBenchModels.join(', ')}, got "${String(kind)}"`,
    );
  const batchSize = opts.batch ?? 256;
  const lr = opts.lr ?? 1e-3;
  const passes = opts.passes ?? 1;
  const threads = opts.threads ?? 2;
  // Small batches compute in a few ms: a second concurrent batch then only competes with the
  // main thread for the two cores (and adds staleness), so pipelining starts at 128 examples.
  const depth = Math.max(1, opts.pipeline ?? (batchSize >= 128 ? threads : 1));
  const examples = readCriteo(path);
  if (examples.length === 0) throw new FreshetError('CONFIG', `no Criteo examples in ${path}`);

  const seed = opts.seed ?? 0;
  const overrides: Partial<ModelConfigInput> = {
    optimizer: { kind: 'adam', lr },
    seed,
    embeddingInit: { kind: 'normal', std: 0.01, seed },
    ...opts.overrides,
  };
  const model = createModel(configOf[kind](overrides));
  const core = new ShardCore({
    spec: model.spec,
    shard: 0,
    shards: 1,
    checkOwnership: false,
    maxPushRows: 1 << 22,
    maxPullKeys: 1 << 22,
    sketchWidth: 1 << 12,
    recentPushIds: 1024,
    dcMaxWorkers: 4,
    dcMaxRowsPerWorker: 1 << 16,
  });
  const pool = await ComputePool.create({ model: model.config, threads, maxQueue: depth });
  const n = examples.length;
  const preds = new Float32Array(n);
  const labels = new Float32Array(n);
  let seen = 0;
  let computeMs = 0;
  const mainMs = { encode: 0, pull: 0, apply: 0 };
  let maxTau = 0;
  let pushId = 0;

  const step = async (batch: EncodedBatch, at: number | undefined) => {
    // Pull: what a worker asks its shards for (one request; one shard here).
    const tp = performance.now();
    const req: PullRequest = { worker: 'bench', tables: [] };
    for (const s of batch.sparse) req.tables.push({ t: s.table, keys: s.keys });
    for (const t of batch.denseTables) req.tables.push({ t, keys: new Uint32Array(2) });
    const reply = core.pull(req);
    const rows: (Float32Array | undefined)[] = [];
    reply.tables.forEach((t) => (rows[t.t] = t.values));
    // The batch's arrays move to the compute thread: keep what the push needs.
    const pushTables: Omit<PushTable, 'grads'>[] = [
      ...batch.sparse.map((s) => ({
        t: s.table,
        dim: model.spec.tables[s.table]!.dim,
        keys: s.keys.slice(),
        counts: s.counts.slice(),
      })),
      ...batch.denseTables.map((t) => ({
        t,
        dim: model.spec.tables[t]!.dim,
        keys: new Uint32Array(2),
        counts: Uint32Array.of(batch.size),
      })),
    ];
    const size = batch.size;
    mainMs.pull += performance.now() - tp;
    const y = at === undefined ? undefined : batch.labels.slice();
    const r = await pool.gradients(batch, rows);
    computeMs += r.ms;
    if (at !== undefined && y) {
      preds.set(r.preds, at);
      labels.set(y, at);
    }
    const ta = performance.now();
    const tables: PushTable[] = [];
    for (const p of pushTables) {
      const g = r.grads[p.t];
      if (g) tables.push({ ...p, grads: g });
    }
    const res = core.applyPush(
      { id: `bench-${pushId++}`, worker: 'bench', clock: 0, base: reply.version, tables },
      Date.now(),
    );
    maxTau = Math.max(maxTau, res.tau);
    mainMs.apply += performance.now() - ta;
    seen += size;
  };

  const t0 = performance.now();
  try {
    const inFlight = new Set<Promise<void>>();
    for (let p = 0; p < passes; p++) {
      for (let s = 0; s < n; s += batchSize) {
        const chunk = examples.slice(s, s + batchSize);
        const te = performance.now();
        const batch = model.encode(chunk);
        mainMs.encode += performance.now() - te;
        const job: Promise<void> = step(batch, p === 0 ? s : undefined).finally(() => inFlight.delete(job));
        inFlight.add(job);
        if (inFlight.size >= depth) await Promise.race(inFlight);
      }
    }
    await Promise.all(inFlight);
  } finally {
    await pool.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  let ll = 0;
  for (let i = 0; i < n; i++) ll += logloss(preds[i]!, labels[i]!);
  const ours = {
    bench: 'train',
    model: kind,
    seed,
    data: `criteo:${m[1]!}`,
    examples: seen,
    batch: batchSize,
    lr,
    passes,
    threads,
    pipeline: depth,
    backend: pool.backend,
    simd: pool.simd,
    seconds: Math.round(seconds * 1000) / 1000,
    examples_per_s: Math.round(seen / seconds),
    compute_ms_per_batch: Math.round((computeMs / Math.ceil(seen / batchSize)) * 100) / 100,
    main_ms_per_batch: Object.fromEntries(
      Object.entries(mainMs).map(([k, v]) => [k, Math.round((v / Math.ceil(seen / batchSize)) * 100) / 100]),
    ),
    max_staleness: maxTau,
    progressive_auc: Math.round(exactAuc(preds, labels) * 10_000) / 10_000,
    progressive_logloss: Math.round((ll / n) * 10_000) / 10_000,
  };
  if (opts.torch === false) return ours;
  // The same file, passes, batch, threads, lr and seed (bench/peers/torch_online.py).
  const run = await runTorchPeer(
    'torch_online.py',
    [path, String(passes), String(batchSize), String(threads), String(lr), String(seed)],
    600_000,
  );
  if (!run.ok) return { ...ours, peer: run.peer };
  const torch = run.json;
  const num = (k: string) => (typeof torch[k] === 'number' ? torch[k] : undefined);
  const teps = num('examples_per_s');
  const tauc = num('progressive_auc_pass1');
  const tll = num('progressive_logloss_pass1');
  const r4 = (x: number) => Math.round(x * 10_000) / 10_000;
  return {
    ...ours,
    peer: typeof torch.peer === 'string' ? torch.peer : 'pytorch',
    torch,
    vs_torch: {
      examples_per_s: teps ? r4(ours.examples_per_s / teps) : null,
      auc_delta: tauc !== undefined ? r4(ours.progressive_auc - tauc) : null,
      logloss_delta: tll !== undefined ? r4(ours.progressive_logloss - tll) : null,
    },
  };
}
