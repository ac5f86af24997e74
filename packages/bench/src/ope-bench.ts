import type { CsvSpecInput } from '@freshet/client';
import { createModel, initRows, logLoss, type Example } from '@freshet/model';
import { FreshetError, type Features } from '@freshet/protocol';
import { ComputePool, exactAuc } from '@freshet/worker';
import { benchModelConfig, type BenchModel } from './bench-models.js';
import { candidateFeatures, loadOpeLog, type LoggedDecision } from './ope-data.js';
import {
  argmaxSlotProbabilities,
  estimatePolicyValue,
  MAX_SOFTMAX_SLOT,
  softmaxSlotProbabilities,
  uniformSlotProbabilities,
  type OpeEstimate,
} from './ope-estimators.js';
import { trainOnline } from './online-trainer.js';

/** Options of {@link runOpeBench} (`freshet bench ope`). */
export interface OpeBenchOptions {
  /** Any data ref `freshet replay` accepts whose impressions carry propensities (`obd:PATH`, `csv:PATH` with a propensity column). */
  data: string;
  spec?: CsvSpecInput | string;
  /** Only the first this many logged decisions. */
  limit?: number;
  /** The model trained progressively and evaluated (default lr). */
  model?: BenchModel;
  lr?: number;
  seed?: number;
  dim?: number;
  batch?: number;
  threads?: number;
  /** `argmax`: slot k shows the model's k-th ranked candidate; `softmax`: a Plackett–Luce sample. */
  policy?: 'argmax' | 'softmax';
  /** Softmax temperature on the model's logits (default 1). */
  temperature?: number;
  /** Importance weights above this are clipped to it (default 100). */
  clip?: number;
  /**
   * More policies to estimate in the same run (API only; tests use a policy that knows a
   * generator's truth): a score per candidate's features, ranked as the model's scores are.
   */
  policies?: Record<string, (features: Features) => number>;
  /**
   * False: no model is trained or estimated, only the baselines and `policies` (API only), with
   * IPS and SNIPS (no reward model for DM or DR).
   */
  train?: boolean;
}

/** The estimates of each policy, with the logging policy's empirical value; one JSON line. */
export interface OpeBenchResult {
  bench: 'ope';
  data: string;
  decisions: number;
  clicks: number;
  events: number;
  no_propensity: number;
  candidates: number;
  slots: number;
  policy: { mode: 'argmax' | 'softmax'; temperature?: number };
  clip: number;
  model: string;
  /** The logging policy's value: the mean logged reward. */
  logging: { value: number };
  /** The trained model's progressive AUC and logloss on the logged decisions (absent untrained). */
  progressive?: { auc: number; logloss: number };
  estimates: Record<string, Record<string, number | null>>;
  seconds: number;
}

interface PolicyAcc {
  pLogged: Float64Array;
  dm: Float64Array;
  qLogged: Float64Array;
}

const r6 = (x: number) => Math.round(x * 1e6) / 1e6;
const logit = (p: number) => {
  const q = Math.min(Math.max(p, 1e-7), 1 - 1e-7);
  return Math.log(q / (1 - q));
};

/**
 * `bench ope`: trains a model progressively on the log (the in-process trainer, as `bench train`)
 * and, before each batch, scores every candidate item in each of the batch's logged contexts with
 * the model as it then is: the evaluation policy is the model's ranking of the candidates (the
 * items the log shows). Its value is estimated with IPS, SNIPS and DR (the model's own predictions
 * as the direct method), next to the logging policy's mean reward, a uniformly random ranking and
 * the frozen (untrained) model, all on the same decisions. See docs/off-policy.md.
 */
export async function runOpeBench(o: OpeBenchOptions): Promise<OpeBenchResult> {
  const t0 = performance.now();
  const mode = o.policy ?? 'argmax';
  const temperature = o.temperature ?? 1;
  const clip = o.clip ?? 100;
  if (!(clip > 0)) throw new FreshetError('CONFIG', `clip must be positive, got ${clip}`);
  if (mode === 'softmax' && !(temperature > 0))
    throw new FreshetError('CONFIG', `temperature must be positive, got ${temperature}`);
  const log = await loadOpeLog(o.data, {
    ...(o.spec !== undefined ? { spec: o.spec } : {}),
    ...(o.limit !== undefined ? { limit: o.limit } : {}),
  });
  const { decisions, items } = log;
  const slots = 1 + decisions.reduce((m, d) => Math.max(m, d.slot), 0);
  if (mode === 'softmax' && slots - 1 > MAX_SOFTMAX_SLOT)
    throw new FreshetError(
      'CONFIG',
      `${o.data}: the softmax policy is exact for slots 0-${MAX_SOFTMAX_SLOT}; the log has slot ${slots - 1}`,
    );
  const modelKind = o.model ?? 'lr';
  const config = benchModelConfig(modelKind, log, {
    lr: o.lr ?? 0.01,
    seed: o.seed ?? 0,
    ...(o.dim !== undefined ? { dim: o.dim } : {}),
  });
  const batch = o.batch ?? 256;
  const n = decisions.length;
  const itemIndex = new Map(items.map((it, i) => [it, i]));
  const train = o.train ?? true;
  const names = [...(train ? ['model', 'frozen'] : []), 'random', ...Object.keys(o.policies ?? {})];
  const acc = new Map<string, PolicyAcc>(
    names.map((k) => [
      k,
      { pLogged: new Float64Array(n), dm: new Float64Array(n), qLogged: new Float64Array(n) },
    ]),
  );
  const dist = (scores: ArrayLike<number>, slot: number) =>
    mode === 'argmax'
      ? argmaxSlotProbabilities(scores, slot)
      : softmaxSlotProbabilities(scores, slot, temperature);
  const record = (name: string, i: number, pi: Float64Array, q: ArrayLike<number>, logged: number) => {
    const a = acc.get(name)!;
    a.pLogged[i] = pi[logged]!;
    let v = 0;
    for (let k = 0; k < pi.length; k++) v += pi[k]! * q[k]!;
    a.dm[i] = v;
    a.qLogged[i] = q[logged]!;
  };

  // The frozen model: the same config's initial rows, scored with the trainer's statistics so far.
  const frozenModel = createModel(config);
  frozenModel.encoder.freezeStats();
  const statsModel = createModel(config);
  let frozenPool: ComputePool | undefined;
  const A = items.length;
  const evaluate = async (
    start: number,
    score?: (xs: readonly Example[]) => Promise<Float32Array>,
  ): Promise<void> => {
    const chunk = decisions.slice(start, start + batch);
    const cands: Example[] = [];
    for (const d of chunk)
      for (const it of items) cands.push({ features: candidateFeatures(log, d, it), label: 0 });
    let trained: Float32Array | undefined;
    let frozen: Float32Array | undefined;
    if (score) {
      trained = await score(cands);
      frozenModel.encoder.setRunningStats(statsModel.encoder.runningStats());
      const fb = frozenModel.encode(cands);
      frozen = await frozenPool!.predict(fb, initRows(frozenModel, fb));
      statsModel.encode(log.examples.slice(start, start + batch));
    }
    chunk.forEach((d: LoggedDecision, j) => {
      const i = start + j;
      const logged = itemIndex.get(d.item)!;
      // the baselines' direct-method term is the trained model's prediction (none untrained)
      const q = trained ? trained.subarray(j * A, (j + 1) * A) : new Float32Array(A);
      if (trained && frozen) {
        const qf = frozen.subarray(j * A, (j + 1) * A);
        record('model', i, dist(Array.from(q, logit), d.slot), q, logged);
        record('frozen', i, dist(Array.from(qf, logit), d.slot), qf, logged);
      }
      record('random', i, uniformSlotProbabilities(A, d.slot), q, logged);
      for (const [name, f] of Object.entries(o.policies ?? {})) {
        const s = items.map((_, k) => f(cands[j * A + k]!.features));
        record(name, i, dist(s, d.slot), q, logged);
      }
    });
  };

  try {
    let progressive: OpeBenchResult['progressive'];
    if (train) {
      frozenPool = await ComputePool.create({ model: frozenModel.config, threads: 1, maxQueue: 1 });
      const run = await trainOnline({
        model: config,
        examples: log.examples,
        batch,
        threads: o.threads ?? 2,
        beforeBatch: evaluate,
      });
      progressive = {
        auc: r6(exactAuc(run.preds, run.labels)),
        logloss: r6(logLoss(run.preds, run.labels, run.weights)),
      };
    } else {
      for (let s = 0; s < n; s += batch) await evaluate(s);
    }
    const rewards = Float64Array.from(decisions, (d) => d.reward);
    const props = Float64Array.from(decisions, (d) => d.propensity);
    const estimates: Record<string, Record<string, number | null>> = {};
    for (const name of names) {
      const a = acc.get(name)!;
      estimates[name] = round(estimatePolicyValue(rewards, props, train ? a : { pLogged: a.pLogged }, clip));
    }
    const clicks = decisions.reduce((s, d) => s + (d.reward >= 0.5 ? 1 : 0), 0);
    return {
      bench: 'ope',
      data: o.data,
      decisions: n,
      clicks,
      events: log.events,
      no_propensity: log.noPropensity,
      candidates: A,
      slots,
      policy: mode === 'softmax' ? { mode, temperature } : { mode },
      clip,
      model: modelKind,
      logging: { value: r6(rewards.reduce((s, r) => s + r, 0) / n) },
      ...(progressive ? { progressive } : {}),
      estimates,
      seconds: Math.round((performance.now() - t0) / 10) / 100,
    };
  } finally {
    await frozenPool?.close();
  }
}

function round(e: OpeEstimate): Record<string, number | null> {
  const out: Record<string, number | null> = {
    ips: r6(e.ips),
    snips: e.snips === null ? null : r6(e.snips),
  };
  if (e.dr !== undefined) out.dr = r6(e.dr);
  if (e.dm !== undefined) out.dm = r6(e.dm);
  out.ess = Math.round(e.ess * 10) / 10;
  out.matched = e.matched;
  out.clipped = e.clipped;
  out.max_weight = r6(e.maxWeight);
  return out;
}
