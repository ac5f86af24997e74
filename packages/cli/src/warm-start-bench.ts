import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchModelConfig, inProcessCore, loadBenchData, runTorchPeer } from '@freshet/bench';
import { createModel, logLoss, type Example, type Model, type ModelConfigInput } from '@freshet/model';
import { FreshetError, pushWidth, type PullRequest, type PushTable } from '@freshet/protocol';
import type { ShardCore } from '@freshet/shard';
import { ComputePool, exactAuc } from '@freshet/worker';
import {
  decodeWarmStart,
  encodeWarmStart,
  type WarmStartFile,
  type WarmStartTable,
} from './warm-start-file.js';
import { importDigest, importWarmStart, type ImportReport, type ShardLink } from './warm-start-import.js';

/**
 * `freshet bench warm` (docs/warm-start.md): a batch model trained on the head of a Criteo log,
 * imported as starting weights, against the alternatives on the log's later slice. On the tail,
 * each example scored before it is trained on (progressive validation), all in one run on the
 * same examples, batches and learning rates:
 *   - `frozen`: the batch model, never updated;
 *   - `cold`: an online model from its initial weights;
 *   - `warm`: the batch model imported (the import's own code, on an in-process shard), then
 *     online at the same learning rate;
 *   - `warm_lower_lr`: the same at `warmLrScale` times the rate (fresh optimizer state on a model
 *     near its optimum: see docs/warm-start.md);
 *   - `online_all_along`: an online model that also learned the head online (a reference: what
 *     a cluster that ran from the log's start would have).
 * The batch model comes from the PyTorch exporter (`bench/peers/torch_export.py`) when it runs,
 * else from Freshet's own trainer run `epochs` passes over the head (the JSON says which).
 */

export interface WarmBenchOptions {
  data: string;
  model: 'fm' | 'lr';
  /** Examples of the head (default: half the log). */
  trainRows?: number;
  epochs: number;
  batch: number;
  lr: number;
  /** Learning rate of the batch trainer (default: `lr`). */
  batchLr?: number;
  dim: number;
  seed: number;
  threads: number;
  /** `torch` (fail without it), `freshet`, or `auto` (torch when available). */
  trainer: 'auto' | 'torch' | 'freshet';
  /**
   * Learning-rate multiplier of the `warm_lower_lr` variant: an imported model sits near an
   * optimum with fresh optimizer state (Adam's moments, Adagrad's accumulators start over), so
   * full-rate steps first move it away.
   */
  warmLrScale: number;
  /** Keep the warm-start file here (default: a temporary file, removed). */
  out?: string;
}

interface Variant {
  auc: number;
  logloss: number;
}

/** The import's transport on an in-process shard: the bench applies a file as the CLI does. */
function coreLink(core: ShardCore): ShardLink {
  return {
    pull: (_s, req) => Promise.resolve(core.pull(req)),
    push: (_s, req) => {
      const v = core.appliedVersion(req.id);
      if (v !== undefined) return Promise.resolve({ version: v, staleness: 0, applied: 0, duplicate: true });
      const r = core.applyPush(req, Date.now());
      return Promise.resolve({ version: r.version, staleness: r.tau, applied: r.applied, duplicate: false });
    },
  };
}

/** A model on one in-process shard: score batches, and train on them when asked. */
class Learner {
  readonly model: Model;
  readonly core: ShardCore;
  private pushes = 0;

  constructor(
    config: ModelConfigInput,
    private readonly pool: ComputePool,
  ) {
    this.model = createModel(config);
    this.core = inProcessCore(this.model.spec);
  }

  private rows(req: PullRequest): (Float32Array | undefined)[] {
    const rows: (Float32Array | undefined)[] = [];
    this.core.pull(req).tables.forEach((t) => (rows[t.t] = t.values));
    return rows;
  }

  /** Progressive predictions of `examples` (scored, then trained on when `train`). */
  async run(
    examples: readonly Example[],
    batchSize: number,
    train: boolean,
    lrScale = 1,
  ): Promise<Float32Array> {
    const preds = new Float32Array(examples.length);
    for (let s = 0; s < examples.length; s += batchSize) {
      const batch = this.model.encode(examples.slice(s, s + batchSize));
      const req: PullRequest = { worker: 'bench', tables: [] };
      for (const x of batch.sparse) req.tables.push({ t: x.table, keys: x.keys });
      for (const t of batch.denseTables) req.tables.push({ t, keys: new Uint32Array(2) });
      const base = this.core.version;
      const rows = this.rows(req);
      if (!train) {
        preds.set(await this.pool.predict(batch, rows), s);
        continue;
      }
      const spec = this.model.spec;
      const keep = [
        ...batch.sparse.map((x) => ({ t: x.table, keys: x.keys.slice(), counts: x.counts.slice() })),
        ...batch.denseTables.map((t) => ({
          t,
          keys: new Uint32Array(2),
          counts: Uint32Array.of(batch.size),
        })),
      ];
      const size = batch.size;
      const r = await this.pool.gradients(batch, rows);
      preds.set(r.preds, s);
      const tables: PushTable[] = [];
      for (const p of keep) {
        const g = r.grads[p.t];
        if (g) tables.push({ ...p, dim: pushWidth(spec.tables[p.t]!), grads: g });
      }
      this.core.applyPush(
        { id: `b${this.pushes++}`, worker: 'bench', clock: 0, base, examples: size, lrScale, tables },
        Date.now(),
      );
    }
    return preds;
  }

  /** Every row the shard holds, as a warm-start file (Freshet as the batch trainer). */
  export(): WarmStartFile {
    const tables = new Map<string, WarmStartTable>();
    this.core.tables.forEach((tab, t) => {
      const keys: number[] = [];
      const values: number[] = [];
      for (let cursor: number | null = 0; cursor !== null;) {
        const page = this.core.snapshot({ op: 'snapshot', t, cursor, limit: 4096 }, 0);
        keys.push(...page.keys);
        values.push(...page.values);
        cursor = page.next;
      }
      if (tab.dense) tables.set(tab.spec.name, { kind: 'dense', values: Float32Array.from(values) });
      else
        tables.set(tab.spec.name, {
          kind: 'sparse',
          dim: tab.dim,
          keys: Uint32Array.from(keys),
          values: Float32Array.from(values),
        });
    });
    return { tables, metadata: { trainer: 'freshet' } };
  }
}

/** AUC and logloss against the frozen and the cold model: {auc: Δ vs frozen, Δ vs cold, ...}. */
function beats(w: Variant, frozen: Variant, cold: Variant) {
  const r4 = (x: number) => Math.round(x * 1e4) / 1e4;
  return {
    auc_vs_frozen: r4(w.auc - frozen.auc),
    auc_vs_cold: r4(w.auc - cold.auc),
    logloss_vs_frozen: r4(w.logloss - frozen.logloss),
    logloss_vs_cold: r4(w.logloss - cold.logloss),
    both: w.auc > frozen.auc && w.auc > cold.auc && w.logloss < frozen.logloss && w.logloss < cold.logloss,
  };
}

function metrics(preds: Float32Array, labels: Float32Array): Variant {
  const r4 = (x: number) => Math.round(x * 1e4) / 1e4;
  return { auc: r4(exactAuc(preds, labels)), logloss: r4(logLoss(preds, labels)) };
}

/** Runs the bench; returns its JSON line's object. */
export async function runWarmStartBench(o: WarmBenchOptions): Promise<Record<string, unknown>> {
  const data = await loadBenchData(o.data);
  if (data.kind !== 'criteo')
    throw new FreshetError(
      'CONFIG',
      `bench warm runs on criteo: data (the exporter's features); got ${data.kind}`,
    );
  const config = benchModelConfig(o.model, data, { lr: o.lr, seed: o.seed, dim: o.dim });
  if (o.model === 'fm') config.embeddingDim = o.dim;
  const all = data.examples;
  const trainRows = o.trainRows ?? Math.floor(all.length / 2);
  if (trainRows <= 0 || trainRows >= all.length)
    throw new FreshetError('CONFIG', `--train-rows ${trainRows}: the log has ${all.length} examples`);
  const head = all.slice(0, trainRows);
  const tail = all.slice(trainRows);
  const labels = Float32Array.from(tail, (e) => e.label);
  const pool = await ComputePool.create({
    model: createModel(config).config,
    threads: o.threads,
    maxQueue: 1,
  });
  const dir = await mkdtemp(join(tmpdir(), 'freshet-warm-'));
  try {
    const path = o.out ?? join(dir, 'warm.safetensors');
    const batchLr = o.batchLr ?? o.lr;
    // 1. the batch model
    let trainer: Record<string, unknown>;
    const torch =
      o.trainer === 'freshet'
        ? undefined
        : await runTorchPeer('torch_export.py', [
            data.path,
            path,
            o.model,
            String(trainRows),
            String(o.epochs),
            String(o.batch),
            String(batchLr),
            String(o.dim),
            String(o.seed),
            String(o.threads),
          ]);
    if (torch?.ok) {
      // where it wrote the file is this run's business, not the result's
      const { out: _out, ...json } = torch.json;
      trainer = json;
    } else {
      if (o.trainer === 'torch') throw new FreshetError('UNAVAILABLE', `PyTorch exporter: ${torch?.peer}`);
      const batchConfig = benchModelConfig(o.model, data, { lr: batchLr, seed: o.seed, dim: o.dim });
      if (o.model === 'fm') batchConfig.embeddingDim = o.dim;
      const b = new Learner(batchConfig, pool);
      for (let e = 0; e < o.epochs; e++) await b.run(head, o.batch, true);
      await writeFile(path, encodeWarmStart(b.export()));
      trainer = { trainer: 'freshet', epochs: o.epochs, ...(torch ? { torch: torch.peer } : {}) };
    }
    const bytes = new Uint8Array(await readFile(path));
    const file = decodeWarmStart(bytes);
    const load = async (l: Learner): Promise<ImportReport> =>
      importWarmStart(coreLink(l.core), l.model.spec, file, importDigest(bytes), { shards: 1 });

    // 2. the same tail, four ways
    const t0 = performance.now();
    const frozen = new Learner(config, pool);
    const imported = await load(frozen);
    const frozenPreds = await frozen.run(tail, o.batch, false);
    const cold = await new Learner(config, pool).run(tail, o.batch, true);
    const warmLearner = new Learner(config, pool);
    await load(warmLearner);
    const warm = await warmLearner.run(tail, o.batch, true);
    const lower = new Learner(config, pool);
    await load(lower);
    const warmLower = await lower.run(tail, o.batch, true, o.warmLrScale);
    const along = new Learner(config, pool);
    await along.run(head, o.batch, true);
    const alongPreds = await along.run(tail, o.batch, true);
    const m = {
      frozen: metrics(frozenPreds, labels),
      cold: metrics(cold, labels),
      warm: metrics(warm, labels),
      warm_lower_lr: metrics(warmLower, labels),
      online_all_along: metrics(alongPreds, labels),
    };
    return {
      bench: 'warm',
      data: o.data,
      model: o.model,
      examples: all.length,
      head: head.length,
      tail: tail.length,
      batch: o.batch,
      lr: o.lr,
      dim: o.model === 'fm' ? o.dim : undefined,
      seed: o.seed,
      batch_trainer: trainer,
      file_bytes: bytes.length,
      import: {
        rows: imported.rows,
        rounds: imported.rounds,
        pushes: imported.pushes,
        differing: imported.differing,
      },
      tail_progressive: m,
      warm_lr_scale: o.warmLrScale,
      beats: {
        warm: beats(m.warm, m.frozen, m.cold),
        warm_lower_lr: beats(m.warm_lower_lr, m.frozen, m.cold),
      },
      seconds: Math.round((performance.now() - t0) / 100) / 10,
      backend: pool.backend,
    };
  } finally {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  }
}
