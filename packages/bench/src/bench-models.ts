import {
  criteoDeepFmConfig,
  criteoPeerWideDeepConfig,
  criteoWideDeepConfig,
  modelKinds,
  type FieldSpec,
  type ModelConfigInput,
  type ModelKind,
} from '@freshet/model';
import { FreshetError } from '@freshet/protocol';

/**
 * The models `bench train` and `bench cluster` run: every model kind of @freshet/model, plus
 * `wide-deep-peer`, the PyTorch peer's Criteo wide&deep with the peer's optimizers exactly, and
 * `lr-ftrl`, the lr model with sequential FTRL (compared with per-example FTRL-Proximal).
 */
export const benchModels = [...modelKinds, 'wide-deep-peer', 'lr-ftrl'] as const;
export type BenchModel = (typeof benchModels)[number];

/** Options of {@link benchModelConfig}. */
export interface BenchModelOptions {
  /** Adam learning rate of every table (the tuned Criteo configs keep Adagrad on the wide table). */
  lr: number;
  /** Seed of the embedding rows and of the dense weights. */
  seed: number;
  /** Embedding width for models on non-Criteo data (default 8, the local cluster's). */
  dim?: number;
  /** Config fields laid over the result; for experiments. */
  overrides?: Partial<ModelConfigInput>;
}

export function isBenchModel(x: string): x is BenchModel {
  return (benchModels as readonly string[]).includes(x);
}

/**
 * The model config a bench trains: on Criteo data the Criteo configs (the peer's features; the
 * wide table on Adagrad, except `wide-deep-peer`), on any other data a model of `kind` on the
 * data's own fields ({@link BenchData.fields}). Every table on Adam at `lr`, N(0, 0.01) rows.
 */
export function benchModelConfig(
  model: BenchModel,
  data: { kind: string; fields: readonly FieldSpec[] },
  o: BenchModelOptions,
): ModelConfigInput {
  const common: Partial<ModelConfigInput> = {
    optimizer: { kind: 'adam', lr: o.lr },
    seed: o.seed,
    embeddingInit: { kind: 'normal', std: 0.01, seed: o.seed },
  };
  if (model === 'lr-ftrl') {
    // on every data its own fields (Criteo's too); FTRL's per-example defaults, not `lr`
    return {
      name: 'bench-lr-ftrl',
      kind: 'lr',
      features: { fields: data.fields.map((f) => ({ ...f })) },
      optimizer: { kind: 'ftrl' },
      ...o.overrides,
    };
  }
  const towers = new Set(data.fields.map((f) => f.tower));
  if (model === 'two-tower' && !(towers.has('user') && towers.has('item')))
    throw new FreshetError(
      'CONFIG',
      `two-tower needs fields of both towers; ${data.kind} data has ${[...towers].join(', ') || 'none'} ` +
        '(item-tower fields are `item` and those fixed per item)',
    );
  if (data.kind === 'criteo') {
    const o2 = { ...common, ...o.overrides };
    if (model === 'wide-deep-peer') return criteoPeerWideDeepConfig(o2);
    if (model === 'deepfm') return criteoDeepFmConfig(o2);
    return criteoWideDeepConfig({ kind: model as ModelKind, ...o2 });
  }
  if (model === 'wide-deep-peer')
    throw new FreshetError(
      'CONFIG',
      "wide-deep-peer is the PyTorch peer's Criteo model: on other data use wide-deep (all-Adam there too)",
    );
  return {
    name: `bench-${model}`,
    kind: model,
    features: { fields: data.fields.map((f) => ({ ...f })) },
    embeddingDim: o.dim ?? 8,
    hidden: [64, 32],
    ...common,
    ...o.overrides,
  };
}
