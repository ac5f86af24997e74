import { z } from 'zod';
import {
  defaultOptimizer,
  FreshetError,
  initSchema,
  optimizerSchema,
  parseModelSpec,
  pushesState,
  stalenessSchema,
  partition,
  type DenseTensor,
  type InitSpec,
  type ModelSpec,
  type TableSpecInput,
} from '@freshet/protocol';
import { compileFeatureSpec, featureSpecSchema, type CompiledFeatureSpec } from './feature-spec.js';

/** Model families. */
export const modelKinds = ['lr', 'fm', 'wide-deep', 'deepfm', 'two-tower', 'seed'] as const;
export type ModelKind = (typeof modelKinds)[number];

/**
 * Per-table settings a config may override (by table name, see {@link ModelLayout}); whatever is
 * not given keeps the model's default. The shard applies them; the model only declares them.
 */
export const tableOverrideSchema = z
  .object({
    optimizer: optimizerSchema.optional(),
    l2: z.number().min(0).optional(),
    clipNorm: z.number().min(0).optional(),
    init: initSchema.optional(),
    staleness: stalenessSchema.optional(),
    minCount: z.number().int().min(1).optional(),
    ttlMs: z.number().int().min(0).optional(),
  })
  .strict();
export type TableOverride = z.infer<typeof tableOverrideSchema>;

export const modelConfigSchema = z
  .object({
    /** The model spec's name (the cluster's model). */
    name: z.string().min(1).max(128).default('model'),
    kind: z.enum(modelKinds),
    features: featureSpecSchema,
    /** Width of the shared embedding table. */
    embeddingDim: z.number().int().min(1).max(1024).default(16),
    /** Hidden layer sizes of the MLP (wide-deep, deepfm) or of each tower (two-tower). */
    hidden: z.array(z.number().int().min(1).max(8192)).max(16).default([128, 64]),
    /** Output width of each tower of a two-tower model. */
    towerDim: z.number().int().min(1).max(1024).default(32),
    /** Embedding rows' initialisation, deterministic per key (shards and serving agree). */
    embeddingInit: initSchema.default({ kind: 'normal', std: 0.01, seed: 0 }),
    /** Seed of the dense weights' PyTorch-like U(±1/√fan_in) initialisation. */
    seed: z.number().int().min(0).max(0xffff).default(0),
    /**
     * Split every dense tensor of more than this many floats into parts of at most this many
     * (dense tables `<name>.part<i>`, placed on consecutive shards), so no one shard carries a
     * whole weight matrix's pushes, flushes and deltas; 0 keeps each tensor whole. Fixed for
     * the life of a cluster, like the tables. Gradient clipping (`clipNorm`) is per part.
     */
    densePartFloats: z
      .union([
        z.literal(0),
        z
          .number()
          .int()
          .min(64)
          .max(1 << 22),
      ])
      .default(0),
    /** Default optimizer of every table (the `seed` model defaults to Adam, lr 0.001, too). */
    optimizer: optimizerSchema.default(() => ({ ...defaultOptimizer })),
    /** Defaults for every table, before per-table overrides. */
    l2: z.number().min(0).default(0),
    clipNorm: z.number().min(0).default(0),
    /**
     * Default staleness policy of every table (the shards' default, `scale` 1/(1+τ), when absent).
     * Per-table overrides win.
     */
    staleness: stalenessSchema.optional(),
    /** Per-table overrides by table name. */
    tables: z.record(z.string(), tableOverrideSchema).default({}),
  })
  .strict();
export type ModelConfig = z.infer<typeof modelConfigSchema>;
export type ModelConfigInput = z.input<typeof modelConfigSchema>;

/** A dense weight tensor: one dense table, or the parts of a partitioned one. */
export interface DenseParam extends DenseTensor {
  shape: [number] | [number, number];
}

/** A linear layer: x·W + b with W [in, out]. */
export interface LinearLayer {
  w: DenseParam;
  b: DenseParam;
  in: number;
  out: number;
}

/** Where each part of a model lives in its tables. */
export interface ModelLayout {
  kind: ModelKind;
  features: CompiledFeatureSpec;
  numericDim: number;
  /** Numeric columns of the user tower (the first ones) for two-tower models. */
  userNumeric: number;
  /** Sparse fields of the user tower (the first ones) for two-tower models. */
  userFields: number;
  embeddingDim: number;
  /** Table id of the shared embedding table (dim = embeddingDim). */
  emb?: number;
  /** Table id of the per-feature scalar (wide) table (dim 1). */
  wide?: number;
  /** Numeric weights then a bias: numericDim + 1 (lr, fm, deepfm). */
  lin?: DenseParam;
  /** MLP (wide-deep, deepfm, seed's single unit). */
  mlp: LinearLayer[];
  userTower: LinearLayer[];
  itemTower: LinearLayer[];
  /** Scalar bias of the two-tower logit. */
  bias?: DenseParam;
  /** Sparse table ids the batch carries inputs for, ascending. */
  sparseTables: number[];
  /** Dense table ids, ascending. */
  denseTables: number[];
  dense: DenseParam[];
}

/**
 * FTRL of the `lr` model runs per example on the workers unless a table turns it off (`sequential`
 * in the optimizer schema): the logit is linear in the pulled rows, so a worker can score and
 * update a batch's examples one at a time and push the z/n it added. A batch then learns what
 * per-example FTRL learns (measured on MovieLens-100k in time order: 0.685 AUC at batch 256
 * with the batch's summed gradient, 0.723 sequential). Other models need a forward pass per
 * example for that, so asking for it there is a configuration error.
 */
function resolveSequentialFtrl(kind: ModelKind, tables: TableSpecInput[]): void {
  const ftrl = (t: TableSpecInput) => (t.optimizer?.kind === 'ftrl' ? t.optimizer : undefined);
  const eligible = kind === 'lr' && tables.every((t) => ftrl(t) !== undefined);
  if (!eligible) {
    const asked = tables.find((t) => ftrl(t)?.sequential === true);
    if (asked) {
      throw new FreshetError(
        'CONFIG',
        `invalid model config: table "${asked.name}": sequential FTRL needs an lr model with FTRL on every table`,
      );
    }
    return;
  }
  const on = !tables.some((t) => ftrl(t)?.sequential === false);
  for (const t of tables) t.optimizer = { ...ftrl(t)!, sequential: on };
}

/**
 * Validates a model config (zod, defaults applied) and derives its table layout and the
 * {@link ModelSpec} the cluster shares. Throws `CONFIG` with every problem named.
 */
export function compileModelConfig(input: unknown): {
  config: ModelConfig;
  spec: ModelSpec;
  layout: ModelLayout;
} {
  const parsed = modelConfigSchema.safeParse(input);
  if (!parsed.success)
    throw new FreshetError('CONFIG', `invalid model config: ${z.prettifyError(parsed.error)}`);
  const config = parsed.data;
  const features = compileFeatureSpec(config.features, config.kind === 'two-tower');
  const tables: TableSpecInput[] = [];
  const k = config.embeddingDim;
  const numericDim = features.numeric.length;
  const base = {
    optimizer: config.optimizer,
    l2: config.l2,
    clipNorm: config.clipNorm,
    ...(config.staleness ? { staleness: config.staleness } : {}),
  };

  // Tensors declared so far: the dense seeds count tensors, not tables, so a partitioned model
  // starts from the very weights of the whole one.
  let declared = 0;
  const sparse = (name: string, dim: number, init: InitSpec): number => {
    tables.push({ ...base, name, kind: 'sparse', dim, init });
    declared++;
    return tables.length - 1;
  };
  const dense = (name: string, shape: [number] | [number, number], init: InitSpec): DenseParam => {
    const size = shape.reduce((a, b) => a * b, 1);
    declared++;
    const parts =
      config.densePartFloats > 0 && size > config.densePartFloats
        ? partition(size, config.densePartFloats)
        : [];
    if (parts.length === 0) {
      tables.push({ ...base, name, kind: 'dense', dim: size, init });
      return { name, shape, size, tables: [tables.length - 1], offsets: [0] };
    }
    const first = tables.length;
    parts.forEach(([offset, dim], index) => {
      const part = { of: name, index, count: parts.length, offset };
      tables.push({
        ...base,
        name: `${name}.part${index}`,
        kind: 'dense',
        dim,
        init: skipTo(init, offset),
        part,
      });
    });
    return { name, shape, size, tables: parts.map((_, i) => first + i), offsets: parts.map(([o]) => o) };
  };
  const linear = (prefix: string, i: number, fanIn: number, out: number): LinearLayer => {
    // PyTorch nn.Linear default: W and b ~ U(±1/√fan_in); a distinct seed per tensor.
    const scale = 1 / Math.sqrt(fanIn);
    const seed = (config.seed << 12) + declared + 1;
    const w = dense(`${prefix}.${i}.w`, [fanIn, out], { kind: 'uniform', scale, seed });
    const b = dense(`${prefix}.${i}.b`, [out], { kind: 'uniform', scale, seed: seed + 1 });
    return { w, b, in: fanIn, out };
  };
  const mlp = (prefix: string, fanIn: number, sizes: number[]): LinearLayer[] => {
    const layers: LinearLayer[] = [];
    let n = fanIn;
    sizes.forEach((out, i) => {
      layers.push(linear(prefix, i, n, out));
      n = out;
    });
    return layers;
  };

  const fields = features.sparse.length;
  const userFields = features.sparse.filter((f) => f.tower === 'user').length;
  const userNumeric = features.numeric.filter((c) => c.tower === 'user').length;
  const layout: ModelLayout = {
    kind: config.kind,
    features,
    numericDim,
    userNumeric,
    userFields,
    embeddingDim: k,
    mlp: [],
    userTower: [],
    itemTower: [],
    sparseTables: [],
    denseTables: [],
    dense: [],
  };
  const zeros: InitSpec = { kind: 'zeros' };
  switch (config.kind) {
    case 'lr':
      layout.wide = sparse('wide', 1, zeros);
      layout.lin = dense('lin', [numericDim + 1], zeros);
      break;
    case 'fm':
      layout.wide = sparse('wide', 1, zeros);
      layout.emb = sparse('emb', k, config.embeddingInit);
      layout.lin = dense('lin', [numericDim + 1], zeros);
      break;
    case 'wide-deep':
      layout.emb = sparse('emb', k, config.embeddingInit);
      layout.wide = sparse('wide', 1, zeros);
      layout.mlp = mlp('mlp', fields * k + numericDim, [...config.hidden, 1]);
      break;
    case 'deepfm':
      layout.emb = sparse('emb', k, config.embeddingInit);
      layout.wide = sparse('wide', 1, zeros);
      layout.lin = dense('lin', [numericDim + 1], zeros);
      layout.mlp = mlp('mlp', fields * k + numericDim, [...config.hidden, 1]);
      break;
    case 'two-tower': {
      const itemFields = fields - userFields;
      const itemNumeric = numericDim - userNumeric;
      if (userFields === 0 || itemFields === 0) {
        throw new FreshetError(
          'CONFIG',
          'invalid model config: a two-tower model needs user and item sparse fields',
        );
      }
      layout.emb = sparse('emb', k, config.embeddingInit);
      layout.userTower = mlp('user', userFields * k + userNumeric, [...config.hidden, config.towerDim]);
      layout.itemTower = mlp('item', itemFields * k + itemNumeric, [...config.hidden, config.towerDim]);
      layout.bias = dense('bias', [1], zeros);
      break;
    }
    case 'seed':
      layout.emb = sparse('emb', k, config.embeddingInit);
      layout.mlp = mlp('out', k + numericDim, [1]);
      break;
  }

  // Overrides name tensors: a partitioned tensor's parts all take its settings.
  const logical = (t: TableSpecInput) => t.part?.of ?? t.name;
  const names = new Set(tables.map(logical));
  const unknown = Object.keys(config.tables).filter((n) => !names.has(n));
  if (unknown.length > 0) {
    throw new FreshetError(
      'CONFIG',
      `invalid model config: no table named ${unknown.map((n) => `"${n}"`).join(', ')} (tables: ${[...names].join(', ')})`,
    );
  }
  for (const t of tables) {
    const o = config.tables[logical(t)];
    if (!o) continue;
    for (const [key, value] of Object.entries(o)) {
      if (value !== undefined) (t as Record<string, unknown>)[key] = value;
    }
    if (o.init && t.part) t.init = skipTo(o.init, t.part.offset);
  }
  resolveSequentialFtrl(config.kind, tables);
  const spec = parseModelSpec({ name: config.name, tables });
  spec.tables.forEach((t, id) => (t.kind === 'sparse' ? layout.sparseTables : layout.denseTables).push(id));
  layout.dense = [layout.lin, ...layout.mlp, ...layout.userTower, ...layout.itemTower, layout.bias]
    .flatMap((x) => (x === undefined ? [] : 'w' in x ? [x.w, x.b] : [x]))
    .sort((a, b) => a.tables[0]! - b.tables[0]!);
  // Sequential FTRL reads `lin` whole, example by example.
  if (layout.lin && spec.tables.some(pushesState)) soleTable(layout.lin);
  return { config, spec, layout };
}

/** The init of a part that starts `offset` floats into its tensor. */
function skipTo(init: InitSpec, offset: number): InitSpec {
  return init.kind === 'zeros' ? init : { ...init, skip: (init.skip ?? 0) + offset };
}

/** The table of a tensor that must not be partitioned (read whole by per-example code). */
export function soleTable(d: DenseParam): number {
  if (d.tables.length !== 1) {
    throw new FreshetError(
      'CONFIG',
      `invalid model config: tensor "${d.name}" must not be partitioned (densePartFloats)`,
    );
  }
  return d.tables[0]!;
}
