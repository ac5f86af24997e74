import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  criteoDeepFmConfig,
  criteoPeerWideDeepConfig,
  criteoWideDeepConfig,
  parseCriteoLine,
  type Example,
  type ModelConfigInput,
} from '@freshet/model';
import { FreshetError } from '@freshet/protocol';
import { exactAuc, logloss } from '@freshet/worker';
import { rollingAuc } from './drift-metrics.js';
import { trainOnline } from './online-trainer.js';
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
  /** Writes one `prediction,label` line per example of the first pass, in stream order. */
  predictions?: string;
  /** Adds `window_auc`: the AUC of consecutive windows of this many examples. */
  window?: number;
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
 * The worker's compute path in one process, without NATS ({@link trainOnline}): the Criteo
 * file in order, each mini-batch encoded, its rows pulled from an in-process shard, scored and
 * differentiated in the piscina pool, and its gradients applied — the predictions made before
 * the update give the progressive AUC/logloss of the first pass. Then
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
  const examples = readCriteo(path);
  if (examples.length === 0) throw new FreshetError('CONFIG', `no Criteo examples in ${path}`);

  const seed = opts.seed ?? 0;
  const overrides: Partial<ModelConfigInput> = {
    optimizer: { kind: 'adam', lr },
    seed,
    embeddingInit: { kind: 'normal', std: 0.01, seed },
    ...opts.overrides,
  };
  // A constant rate, as the peer has: the worker's plateau rule and drift boost stay out.
  const run = await trainOnline({
    model: configOf[kind](overrides),
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
    data: `criteo:${m[1]!}`,
    examples: run.examples,
    batch: batchSize,
    lr,
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
  // The same file, passes, batch, threads, lr and seed (bench/peers/torch_online.py).
  const peer = await runTorchPeer(
    'torch_online.py',
    [path, String(passes), String(batchSize), String(threads), String(lr), String(seed)],
    600_000,
  );
  if (!peer.ok) return { ...ours, peer: peer.peer };
  const torch = peer.json;
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
