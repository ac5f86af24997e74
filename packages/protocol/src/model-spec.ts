import { z } from 'zod';
import { denseTensors } from './dense-parts.js';

/** Per-table optimizer. Shards implement each kind; workers never apply updates. */
export const optimizerSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('adam'),
    lr: z.number().positive().default(1e-3),
    beta1: z.number().min(0).max(1).default(0.9),
    beta2: z.number().min(0).max(1).default(0.999),
    eps: z.number().positive().default(1e-8),
    /**
     * Step count of the bias correction: `table` (the table's pushes on its shard, as
     * torch.optim.SparseAdam counts steps per parameter) or `row` (each row's own updates:
     * first steps of new rows are ~3× smaller, and the model adapts ~2× slower).
     */
    biasCorrection: z.enum(['table', 'row']).default('table'),
  }),
  /**
   * Adagrad and FTRL see the gradient of the batch's summed loss (the push's mean-loss gradient
   * × its example count), so `lr`/`alpha`, `beta`, `l1`, `l2` and `initialAccumulator` mean the
   * same at every batch size, as in the per-example papers.
   */
  z.object({
    kind: z.literal('adagrad'),
    lr: z.number().positive().default(0.05),
    initialAccumulator: z.number().min(0).default(0.1),
    eps: z.number().positive().default(1e-10),
  }),
  z.object({
    kind: z.literal('ftrl'),
    alpha: z.number().positive().default(0.05),
    beta: z.number().min(0).default(1),
    l1: z.number().min(0).default(0),
    l2: z.number().min(0).default(0),
    /**
     * Workers run FTRL per example on the pulled state (w, z, n) and push what it added to z and
     * n, so a batch learns as the examples would one at a time (z and n are sums: concurrent
     * deltas add up). Set by the `lr` model when every table is FTRL (see the model package);
     * absent or false: the shard applies the batch's summed gradient once.
     */
    sequential: z.boolean().optional(),
  }),
  z.object({ kind: z.literal('sgd'), lr: z.number().positive().default(0.01) }),
]);
export type OptimizerSpec = z.infer<typeof optimizerSchema>;

/** The optimizer of a table (and of a model) that names none: Adam, lr 0.001, table bias correction. */
export const defaultOptimizer: OptimizerSpec = optimizerSchema.parse({ kind: 'adam' });

/** How a shard treats a push computed on an old version (τ = versions applied since the pull). */
export const stalenessSchema = z.object({
  /**
   * `sync` (every table or none): each shard sums the pushes of one step, one per live worker,
   * and applies one optimizer step to the sum before answering any of them; W workers at batch
   * b train like one learner at batch W·b (docs/learning-quality.md).
   */
  policy: z.enum(['none', 'reject', 'scale', 'dc', 'ssp', 'sync']).default('scale'),
  /** τ bound for `reject` and `ssp` (clock difference for `ssp`). */
  bound: z.number().int().min(0).default(64),
  /** DC-ASGD λ for `dc`: g + λ·g⊙g⊙(w − w_pulled). */
  lambda: z.number().min(0).default(0.04),
  /**
   * `scale` leaves the rate alone up to this τ and then scales by (1 + tolerance)/(1 + τ): the
   * staleness that pipelining always produces (each worker keeps two batches in flight, so τ
   * of 1–3 with two workers) is not slowness, and halving the rate for it cost 0.02 AUC.
   */
  tolerance: z.number().int().min(0).default(8),
});
export type StalenessSpec = z.infer<typeof stalenessSchema>;

/**
 * `skip`: values of the seeded stream to pass over first, so the part of a partitioned tensor
 * that starts at offset o (`skip: o`) holds exactly those values of the whole tensor's init.
 * Optional rather than defaulted: a spec stored before it existed reads back unchanged.
 */
const skip = z.number().int().min(0).optional();
export const initSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('zeros') }),
  z.object({
    kind: z.literal('normal'),
    std: z.number().positive(),
    seed: z.number().int().default(0),
    skip,
  }),
  /** Glorot-uniform style: U(−scale, scale). */
  z.object({
    kind: z.literal('uniform'),
    scale: z.number().positive(),
    seed: z.number().int().default(0),
    skip,
  }),
]);
export type InitSpec = z.infer<typeof initSchema>;

const tableName = z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/);
export const tableSpecSchema = z.object({
  name: tableName,
  /** `sparse`: rows keyed by 64-bit feature id. `dense`: one row (key 0) holding a weight tensor, or a part of one (`part`). */
  kind: z.enum(['sparse', 'dense']).default('sparse'),
  dim: z
    .number()
    .int()
    .min(1)
    .max(1 << 22),
  optimizer: optimizerSchema.default(() => ({ ...defaultOptimizer })),
  /** L2 weight decay added to the gradient: g + l2·w. */
  l2: z.number().min(0).default(0),
  /** Per-row gradient L2-norm clip; 0 disables. */
  clipNorm: z.number().min(0).default(0),
  init: initSchema.default({ kind: 'zeros' }),
  staleness: stalenessSchema.default({ policy: 'scale', bound: 64, lambda: 0.04, tolerance: 8 }),
  /** A row is created only after its id was seen this many times (Monolith-style admission). */
  minCount: z.number().int().min(1).default(1),
  /** Rows unseen for this long are evicted (tombstoned to serving); 0 keeps rows forever. */
  ttlMs: z.number().int().min(0).default(0),
  /**
   * A dense table that is one part of a larger tensor (a partitioned tensor: its floats
   * [offset, offset + dim) of tensor `of`, part `index` of `count`). The parts are placed on
   * consecutive shards ({@link shardOfDense}), so one tensor's pushes, flushes and deltas spread
   * over `count` shards instead of landing on one.
   */
  part: z
    .object({
      of: tableName,
      index: z.number().int().min(0),
      count: z.number().int().min(2).max(4096),
      offset: z.number().int().min(0),
    })
    .strict()
    .optional(),
});
export type TableSpec = z.infer<typeof tableSpecSchema>;

/** Whether workers push this table's optimizer-state deltas (sequential FTRL) instead of gradients. */
export function pushesState(spec: TableSpec): boolean {
  return spec.optimizer.kind === 'ftrl' && spec.optimizer.sequential === true;
}
/** Floats per row of a pull: w, z and n of a state-pushing table when the pull asks for state. */
export function pullWidth(spec: TableSpec, state: boolean): number {
  return state && pushesState(spec) ? 3 * spec.dim : spec.dim;
}
/** Floats per row of a push: Δz and Δn of a state-pushing table, else the gradient. */
export function pushWidth(spec: TableSpec): number {
  return pushesState(spec) ? 2 * spec.dim : spec.dim;
}
export type TableSpecInput = z.input<typeof tableSpecSchema>;

/** The part of a model the cluster shares: its tables. Table ids are indexes into `tables`. */
export const modelSpecSchema = z.object({
  name: z.string().min(1).max(128),
  tables: z.array(tableSpecSchema).min(1).max(4096),
});
export type ModelSpec = z.infer<typeof modelSpecSchema>;
export type ModelSpecInput = z.input<typeof modelSpecSchema>;

/** Validates a model spec and checks that table names are unique. */
export function parseModelSpec(input: unknown): ModelSpec {
  const spec = modelSpecSchema.parse(input);
  const seen = new Set<string>();
  for (const t of spec.tables) {
    if (seen.has(t.name)) throw new Error(`duplicate table name "${t.name}"`);
    seen.add(t.name);
  }
  denseTensors(spec);
  return spec;
}
