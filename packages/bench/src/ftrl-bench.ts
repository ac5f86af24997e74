import type { CsvSpecInput } from '@freshet/client';
import { logLoss, type ModelConfigInput } from '@freshet/model';
import { optimizerSchema } from '@freshet/protocol';
import { exactAuc } from '@freshet/worker';
import { loadBenchData } from './bench-data.js';
import { trainOnline } from './online-trainer.js';
import { lrSparseVectors, sequentialFtrl, type FtrlParams } from './sequential-ftrl.js';

/** Options of {@link runFtrlBench} (`freshet bench ftrl`). */
export interface FtrlBenchOptions {
  /** Any data ref `freshet replay` accepts (`csv:PATH` with `spec`, movielens, obd, criteo). */
  data: string;
  spec?: CsvSpecInput | string;
  limit?: number;
  /** Freshet's batch sizes to compare (default: the worker's default, 256). */
  batches?: number[];
  /** FTRL hyper-parameters, per example (default: the optimizer's defaults). */
  ftrl?: Partial<FtrlParams>;
  threads?: number;
}

const r4 = (x: number) => Math.round(x * 10_000) / 10_000;

/**
 * `bench ftrl`: the `lr` model with FTRL on the data's own features, trained by Freshet's
 * in-process trainer (the worker's compute path into a shard's FTRL) at the given batch sizes,
 * against per-example FTRL-Proximal written from the paper ({@link sequentialFtrl}) on the same
 * inputs in the same order. Both score each example before training on it; the JSON gives each
 * progressive AUC and logloss and Freshet's gap to the sequential learner.
 */
export async function runFtrlBench(o: FtrlBenchOptions): Promise<Record<string, unknown>> {
  const data = await loadBenchData(o.data, { spec: o.spec, limit: o.limit });
  const parsed = optimizerSchema.parse({ kind: 'ftrl', ...o.ftrl });
  if (parsed.kind !== 'ftrl') throw new Error('unreachable: parsed a non-FTRL optimizer');
  const h: FtrlParams = { alpha: parsed.alpha, beta: parsed.beta, l1: parsed.l1, l2: parsed.l2 };
  const model: ModelConfigInput = {
    name: 'ftrl-bench',
    kind: 'lr',
    features: { fields: data.fields },
    optimizer: parsed,
  };
  const examples = data.examples;
  const labels = Float32Array.from(examples, (e) => e.label);
  const weights = Float32Array.from(examples, (e) => e.weight ?? 1);
  const batches = o.batches ?? [256];

  const t0 = performance.now();
  // The encoder's running statistics depend on its chunks: encode as the first run does.
  const { vectors, coordinates } = lrSparseVectors(model, examples, batches[0]!);
  const seqPreds = sequentialFtrl(vectors, labels, coordinates, h, weights);
  const seqSeconds = (performance.now() - t0) / 1000;
  const sequentialAuc = exactAuc(seqPreds, labels);
  const out: Record<string, unknown> = {
    bench: 'ftrl',
    data: data.ref,
    examples: examples.length,
    fields: data.fields.map((f) => `${f.name}:${f.kind}`),
    model: 'lr',
    ftrl: h,
    sequential: {
      auc: r4(sequentialAuc),
      logloss: r4(logLoss(Float32Array.from(seqPreds), labels, weights)),
      examples_per_s: Math.round(examples.length / Math.max(seqSeconds, 1e-9)),
    },
  };
  const runs: Record<string, unknown>[] = [];
  // each batch size per example (the default) and with the batch's summed gradient applied once
  const modes = [true, false].flatMap((sequential) => batches.map((batch) => ({ batch, sequential })));
  for (const { batch, sequential } of modes) {
    // The peer's setting: FTRL alone, no learning-rate schedule scaling its gradients.
    const r = await trainOnline({
      model: { ...model, optimizer: { ...parsed, sequential } },
      examples,
      batch,
      threads: o.threads ?? 2,
      lr: { plateau: { enabled: false }, drift: { enabled: false } },
    });
    const auc = exactAuc(r.preds, r.labels);
    runs.push({
      batch,
      mode: sequential ? 'sequential' : 'summed',
      auc: r4(auc),
      logloss: r4(logLoss(r.preds, r.labels, r.weights)),
      gap: r4(sequentialAuc - auc),
      examples_per_s: Math.round(r.examples / r.seconds),
      backend: r.backend,
    });
  }
  out.freshet = runs;
  return out;
}
