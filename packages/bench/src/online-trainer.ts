import {
  createModel,
  isSequentialFtrl,
  logLoss,
  type EncodedBatch,
  type Example,
  type ModelConfigInput,
} from '@freshet/model';
import { pushWidth, type ModelSpec, type PullRequest, type PushTable } from '@freshet/protocol';
import { ShardCore } from '@freshet/shard';
import { ComputePool, LrSchedule, lrScheduleSchema } from '@freshet/worker';
import type { z } from 'zod';

/** Options of {@link trainOnline}. */
export interface OnlineTrainOptions {
  model: ModelConfigInput;
  /** Labelled examples in stream order. */
  examples: readonly Example[];
  batch: number;
  passes?: number;
  /** Compute threads (default 2). */
  threads?: number;
  /**
   * Batches between pull and apply at once (default 1, as the worker's `maxInFlightBatches`: a
   * second one adds a version of staleness to every push; on Criteo-10k, the peer's wide&deep at
   * batch 256, seed 0: progressive AUC 0.593 with 2 against 0.648 with 1).
   */
  pipeline?: number;
  /** The worker's learning-rate schedule (plateau, drift detector); default: the worker's default. */
  lr?: z.input<typeof lrScheduleSchema>;
  /**
   * Pushes carry their example count (default true), so Adagrad/FTRL tables see summed-loss
   * gradients. False measures what that buys (the mean-loss gradient, as before).
   */
  sendExamples?: boolean;
  /**
   * Called before each batch of the first pass (after the batches before it are applied), with a
   * scorer of any examples on the rows as they are then: progressive off-policy evaluation scores
   * each logged context's candidates there. The scorer leaves the running statistics alone.
   */
  beforeBatch?: (start: number, score: (xs: readonly Example[]) => Promise<Float32Array>) => Promise<void>;
}

/** What {@link trainOnline} measured: progressive predictions of the first pass and costs. */
export interface OnlineTrainRun {
  /** Prediction of example i, scored before any update from it (progressive validation). */
  preds: Float32Array;
  labels: Float32Array;
  weights: Float32Array;
  examples: number;
  seconds: number;
  backend: string;
  simd: boolean | undefined;
  pipeline: number;
  computeMsPerBatch: number;
  mainMsPerBatch: { encode: number; pull: number; apply: number };
  maxStaleness: number;
  /** What the learning-rate schedule did (as in a worker's status). */
  schedule: { lowered: number; drifts: number; finalScale: number };
}

/**
 * The worker's compute path in one process, on one in-process shard: encode, pull, gradients in
 * the piscina threads (the same {@link ComputePool} the worker uses), push into a
 * {@link ShardCore}. No NATS, no joiner: the learning the cluster does, without the transport.
 */
export async function trainOnline(o: OnlineTrainOptions): Promise<OnlineTrainRun> {
  const batchSize = o.batch;
  const threads = o.threads ?? 2;
  const model = createModel(o.model);
  // a sequential-FTRL model trains on w, z, n and pushes state deltas (as the worker does)
  const sequential = isSequentialFtrl(model);
  // as the worker: one batch in flight unless asked, never more for sequential FTRL (its options)
  const depth = sequential ? 1 : Math.max(1, o.pipeline ?? 1);
  const core = inProcessCore(model.spec);
  const pool = await ComputePool.create({ model: model.config, threads, maxQueue: depth });
  const n = o.examples.length;
  const preds = new Float32Array(n);
  const labels = new Float32Array(n);
  const weights = new Float32Array(n);
  let seen = 0;
  let computeMs = 0;
  const mainMs = { encode: 0, pull: 0, apply: 0 };
  let maxTau = 0;
  let pushId = 0;
  const schedule = new LrSchedule(lrScheduleSchema.parse(o.lr ?? {}));

  const step = async (batch: EncodedBatch, at: number | undefined) => {
    const tp = performance.now();
    const req: PullRequest = { worker: 'bench', state: sequential || undefined, tables: [] };
    for (const s of batch.sparse) req.tables.push({ t: s.table, keys: s.keys });
    for (const t of batch.denseTables) req.tables.push({ t, keys: new Uint32Array(2) });
    const reply = core.pull(req);
    const rows: (Float32Array | undefined)[] = [];
    reply.tables.forEach((t) => (rows[t.t] = t.values));
    // The batch's arrays move to the compute thread: keep what the push needs.
    const pushTables: Omit<PushTable, 'grads'>[] = [
      ...batch.sparse.map((s) => ({
        t: s.table,
        dim: pushWidth(model.spec.tables[s.table]!),
        keys: s.keys.slice(),
        counts: s.counts.slice(),
      })),
      ...batch.denseTables.map((t) => ({
        t,
        dim: pushWidth(model.spec.tables[t]!),
        keys: new Uint32Array(2),
        counts: Uint32Array.of(batch.size),
      })),
    ];
    const size = batch.size;
    mainMs.pull += performance.now() - tp;
    const y = at === undefined ? undefined : batch.labels.slice();
    const w = at === undefined ? undefined : batch.weights.slice();
    const r = await pool.gradients(batch, rows);
    computeMs += r.ms;
    if (at !== undefined && y && w) {
      preds.set(r.preds, at);
      labels.set(y, at);
      weights.set(w, at);
      schedule.observe(logLoss(r.preds, y, w), size);
    }
    const ta = performance.now();
    const tables: PushTable[] = [];
    for (const p of pushTables) {
      const g = r.grads[p.t];
      if (g) tables.push({ ...p, grads: g });
    }
    const res = core.applyPush(
      {
        id: `bench-${pushId++}`,
        worker: 'bench',
        clock: 0,
        base: reply.version,
        examples: o.sendExamples === false ? 1 : size,
        lrScale: schedule.scale(),
        tables,
      },
      Date.now(),
    );
    maxTau = Math.max(maxTau, res.tau);
    mainMs.apply += performance.now() - ta;
    seen += size;
  };

  // a second encoder with the trainer's statistics, frozen: scoring must not move them
  const scorer = o.beforeBatch && createModel(model.config);
  scorer?.encoder.freezeStats();
  const score = async (xs: readonly Example[]): Promise<Float32Array> => {
    scorer!.encoder.setRunningStats(model.encoder.runningStats());
    const batch = scorer!.encode(xs);
    const req: PullRequest = { worker: 'bench', tables: [] };
    for (const s of batch.sparse) req.tables.push({ t: s.table, keys: s.keys });
    for (const t of batch.denseTables) req.tables.push({ t, keys: new Uint32Array(2) });
    const rows: (Float32Array | undefined)[] = [];
    core.pull(req).tables.forEach((t) => (rows[t.t] = t.values));
    return pool.predict(batch, rows);
  };

  const t0 = performance.now();
  try {
    const inFlight = new Set<Promise<void>>();
    for (let p = 0; p < (o.passes ?? 1); p++) {
      for (let s = 0; s < n; s += batchSize) {
        if (o.beforeBatch && p === 0) {
          await Promise.all(inFlight);
          await o.beforeBatch(s, score);
        }
        const chunk = o.examples.slice(s, s + batchSize);
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
  const batches = Math.max(1, Math.ceil(seen / batchSize));
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    preds,
    labels,
    weights,
    examples: seen,
    seconds: (performance.now() - t0) / 1000,
    backend: pool.backend,
    simd: pool.simd,
    pipeline: depth,
    computeMsPerBatch: r2(computeMs / batches),
    mainMsPerBatch: {
      encode: r2(mainMs.encode / batches),
      pull: r2(mainMs.pull / batches),
      apply: r2(mainMs.apply / batches),
    },
    maxStaleness: maxTau,
    schedule: { lowered: schedule.lowered, drifts: schedule.drifts, finalScale: schedule.scale() },
  };
}

/** A whole model on one in-process shard core (no NATS): what the in-process benches train on. */
export function inProcessCore(spec: ModelSpec): ShardCore {
  return new ShardCore({
    spec,
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
}
