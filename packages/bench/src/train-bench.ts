import { writeFile } from 'node:fs/promises';
import type { CsvSpecInput } from '@freshet/client';
import type { ModelConfigInput } from '@freshet/model';
import { FreshetError } from '@freshet/protocol';
import { exactAuc, logloss } from '@freshet/worker';
import { loadBenchData } from './bench-data.js';
import { benchModelConfig, benchModels, isBenchModel, type BenchModel } from './bench-models.js';
import { rollingAuc } from './drift-metrics.js';
import { runExactPeer, type PeerInit } from './exact-peer.js';
import { trainOnline } from './online-trainer.js';

/** Models the train bench runs: every model kind, and the peer's Criteo wide&deep. */
export const trainBenchModels = benchModels;
export type TrainBenchModel = BenchModel;

/** Options of {@link runTrainBench} (the CLI's `freshet bench train`). */
export interface TrainBenchOptions {
  /**
   * Any data ref `freshet replay` takes: `criteo:PATH`, `movielens:PATH`, `obd:PATH`,
   * `csv:PATH` (with `spec`), `synthetic[:k=v,...]`; PATH relative to the current directory.
   */
  data: string;
  /** The csv spec (object or JSON file) of `csv:` data. */
  spec?: CsvSpecInput | string;
  /** Only the first `limit` labelled examples. */
  limit?: number;
  /**
   * A model kind (lr, fm, wide-deep, deepfm, two-tower, seed) on the data's fields, or
   * `wide-deep-peer`: the PyTorch peer's Criteo model and optimizers exactly
   * ({@link criteoPeerWideDeepConfig}). On Criteo data `wide-deep` is the peer's model with an
   * Adagrad-trained wide table ({@link criteoWideDeepConfig}), `deepfm` {@link criteoDeepFmConfig}.
   * Default wide-deep.
   */
  model?: TrainBenchModel;
  /** Seed of the embedding and dense initialisation (default 0), to measure seed variance. */
  seed?: number;
  /** Embedding width of models on non-Criteo data (default 8). */
  dim?: number;
  /** Config fields laid over the chosen model's (e.g. per-table optimizers); for experiments. */
  overrides?: Partial<ModelConfigInput>;
  batch?: number;
  lr?: number;
  passes?: number;
  /** Compute threads (default 2). */
  threads?: number;
  /** Batches between pull and apply at once (default 1, as the worker's `maxInFlightBatches`). */
  pipeline?: number;
  /** Run the PyTorch peer in the same call (default true). */
  torch?: boolean;
  /** The Criteo peer's initial weights: Freshet's (default) or PyTorch's own (exact-peer.ts). */
  peerInit?: PeerInit;
  /** Writes one `prediction,label` line per example of the first pass, in stream order. */
  predictions?: string;
  /** Adds `window_auc`: the AUC of consecutive windows of this many examples. */
  window?: number;
}

/**
 * The worker's compute path in one process, without NATS ({@link trainOnline}): the Criteo
 * file in order, each mini-batch encoded, its rows pulled from an in-process shard, scored and
 * differentiated in the piscina pool, and its gradients applied — the predictions made before
 * the update give the progressive AUC/logloss of the first pass. Then
 * runs the PyTorch peer on the same data and settings and reports the ratios. One JSON object.
 */
export async function runTrainBench(opts: TrainBenchOptions): Promise<Record<string, unknown>> {
  const kind = opts.model ?? 'wide-deep';
  if (!isBenchModel(kind))
    throw new FreshetError(
      'CONFIG',
      `--model must be one of ${trainBenchModels.join(', ')}, got "${String(kind)}"`,
    );
  const batchSize = opts.batch ?? 256;
  const lr = opts.lr ?? 1e-3;
  const passes = opts.passes ?? 1;
  const threads = opts.threads ?? 2;
  const seed = opts.seed ?? 0;
  const dim = opts.dim ?? 8;
  const data = await loadBenchData(opts.data, {
    ...(opts.spec !== undefined ? { spec: opts.spec } : {}),
    ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
  });
  const { examples } = data;
  const model = benchModelConfig(kind, data, {
    lr,
    seed,
    dim,
    ...(opts.overrides ? { overrides: opts.overrides } : {}),
  });
  // A constant rate, as the peer has: the worker's plateau rule and drift boost stay out.
  const run = await trainOnline({
    model,
    examples,
    batch: batchSize,
    passes,
    threads,
    pipeline: opts.pipeline,
    lr: { plateau: { enabled: false }, drift: { enabled: false } },
  });
  const n = run.preds.length;
  let ll = 0;
  for (let i = 0; i < n; i++) ll += logloss(run.preds[i]!, run.labels[i]!);
  const ours = {
    bench: 'train',
    model: kind,
    seed,
    data: opts.data,
    fields: model.features.fields.map((f) => `${f.name}:${f.kind}`),
    events: data.events,
    ...(data.invalid > 0 ? { invalid_events: data.invalid } : {}),
    ...(Object.keys(data.dropped).length > 0 ? { joiner_dropped: data.dropped } : {}),
    examples: run.examples,
    batch: batchSize,
    lr,
    // what trains the model (for lr-ftrl, FTRL with its own α: `lr` does not apply)
    optimizer: model.optimizer ?? null,
    passes,
    threads,
    pipeline: run.pipeline,
    backend: run.backend,
    simd: run.simd,
    seconds: Math.round(run.seconds * 1000) / 1000,
    examples_per_s: Math.round(run.examples / run.seconds),
    compute_ms_per_batch: run.computeMsPerBatch,
    main_ms_per_batch: run.mainMsPerBatch,
    max_staleness: run.maxStaleness,
    progressive_auc: Math.round(exactAuc(run.preds, run.labels) * 10_000) / 10_000,
    progressive_logloss: Math.round((ll / n) * 10_000) / 10_000,
    ...(opts.window
      ? {
          window: opts.window,
          window_auc: rollingAuc(run.preds, run.labels, opts.window, opts.window).map(
            (w) => Math.round(w.auc * 10_000) / 10_000,
          ),
        }
      : {}),
  };
  if (opts.predictions) {
    const lines: string[] = [];
    for (let i = 0; i < n; i++) lines.push(`${run.preds[i]!.toFixed(6)},${run.labels[i]!}`);
    await writeFile(opts.predictions, lines.join('\n') + '\n');
  }
  if (opts.torch === false) return ours;
  const peer = await runExactPeer({
    model: kind,
    data,
    batch: batchSize,
    lr,
    passes,
    threads,
    seed,
    dim,
    overridden: opts.overrides !== undefined,
    ...(opts.peerInit ? { peerInit: opts.peerInit } : {}),
  });
  if (!peer.ok) return { ...ours, peer: peer.peer };
  const torch = peer.json;
  const num = (k: string) => (typeof torch[k] === 'number' ? torch[k] : undefined);
  const teps = num('examples_per_s');
  const tauc = num('progressive_auc_pass1');
  const tll = num('progressive_logloss_pass1');
  const r4 = (x: number) => Math.round(x * 10_000) / 10_000;
  return {
    ...ours,
    peer: peer.peer,
    peer_exact: peer.exact,
    torch,
    vs_torch: {
      examples_per_s: teps ? r4(ours.examples_per_s / teps) : null,
      auc_delta: tauc !== undefined ? r4(ours.progressive_auc - tauc) : null,
      logloss_delta: tll !== undefined ? r4(ours.progressive_logloss - tll) : null,
    },
  };
}
