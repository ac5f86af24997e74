import * as tf from '@tensorflow/tfjs';
import {
  initBackend,
  predict,
  type EncodedBatch,
  type Example,
  type Model,
  type RunningStats,
} from '@freshet/model';
import { FreshetError, type Features } from '@freshet/protocol';
import { FastWideDeep, type GemmKind, type ParamSource } from './fast-wide-deep.js';
import type { Replica } from './replica.js';
import type { Candidate } from './api-schemas.js';
import { RequestEncoder } from './request-encoder.js';

/** How scores are computed: the hand-written forward pass, or @freshet/model's (tfjs) predict. */
export type ScorerKind = 'fast' | 'model';

/** Turns one request (user, context, candidates) into a probability per candidate. */
export interface Scorer {
  readonly kind: ScorerKind;
  readonly model: Model;
  score(user: string, context: Features | undefined, candidates: readonly Candidate[]): Float32Array;
  /**
   * {@link score} in its two steps, for a caller that gathers the rows itself (a sliced node asks
   * other slices for theirs between them): the request as a batch, then its probabilities.
   */
  encode(user: string, context: Features | undefined, candidates: readonly Candidate[]): EncodedBatch;
  predict(batch: EncodedBatch, params: ParamSource): Float32Array;
  /** Standardised columns are scaled with these from now on (the workers' statistics merged). */
  setEncoderStats(stats: Record<string, RunningStats>): void;
}

/**
 * The examples a request stands for: context and user shared, then each candidate's item id and
 * item features (which win over context features of the same name). Each candidate's features
 * object inherits the shared ones through its prototype instead of copying them: the encoder
 * only reads `features[name]`, and copying ~30 context keys into 100 objects costs more than
 * scoring.
 */
export function requestExamples(
  fields: { user: string; item: string },
  user: string,
  context: Features | undefined,
  candidates: readonly Candidate[],
): Example[] {
  const shared: Example['features'] = Object.assign(Object.create(null) as Example['features'], context);
  shared[fields.user] = user;
  return candidates.map((c) => {
    const features = Object.create(shared) as Example['features'];
    if (c.features) Object.assign(features, c.features);
    features[fields.item] = c.item;
    return { features, label: 0 };
  });
}

/**
 * Parameters of one batch read from the replica (unknown keys: the deterministic default). With
 * `reuse` the rows of a table come in one buffer that the next call for that table overwrites
 * (no allocation per request; for callers that use the rows synchronously, as scorers do).
 */
export function replicaParams(replica: Replica, opts: { reuse?: boolean } = {}): ParamSource {
  const scratch: Float32Array[] = [];
  return {
    rows(table, keys) {
      const need = (keys.length >>> 1) * replica.spec.tables[table]!.dim;
      if (!opts.reuse) {
        const out = new Float32Array(need);
        replica.gather(table, keys, out);
        return out;
      }
      let buf = scratch[table];
      if (!buf || buf.length < need) buf = scratch[table] = new Float32Array(Math.max(need, 1024));
      const out = buf.subarray(0, need);
      replica.gather(table, keys, out);
      return out;
    },
    dense: (table) => replica.dense(table),
    stamp: (table) => replica.denseStamp(table),
  };
}

/** Rows in the layout @freshet/model's predict takes. */
export function batchRows(
  model: Model,
  batch: EncodedBatch,
  params: ParamSource,
): (Float32Array | undefined)[] {
  const rows = new Array<Float32Array | undefined>(model.spec.tables.length);
  for (const s of batch.sparse) rows[s.table] = params.rows(s.table, s.keys);
  for (const t of batch.denseTables) rows[t] = params.dense(t);
  return rows;
}

/**
 * Builds the scorer for a model config. `auto` picks the fast path where the model kind has one
 * (wide-deep) and @freshet/model's predict otherwise (then the tfjs backend is started here).
 */
export async function createScorer(
  model: Model,
  replica: Replica,
  opts: { kind: 'auto' | ScorerKind; fields: { user: string; item: string }; gemm?: GemmKind },
): Promise<Scorer> {
  const params = replicaParams(replica, { reuse: true });
  const fast = model.layout.kind === 'wide-deep';
  if (opts.kind === 'fast' && !fast)
    throw new FreshetError(
      'CONFIG',
      `scorer "fast" has no forward pass for ${model.layout.kind}; use auto or model`,
    );
  // User and context encoded once per request, not once per candidate.
  const encoder = new RequestEncoder(model, opts.fields);
  const encode = (user: string, context: Features | undefined, candidates: readonly Candidate[]) =>
    encoder.encode(user, context, candidates);
  if (fast && opts.kind !== 'model') {
    // The hand-written pass reduces the work; tfjs (wasm SIMD) multiplies what is left.
    await initBackend();
    const f = new FastWideDeep(model.layout, { gemm: opts.gemm ?? 'tfjs' });
    return {
      kind: 'fast',
      model,
      score: (user, context, candidates) => f.predict(encode(user, context, candidates), params),
      encode,
      predict: (batch, p) => f.predict(batch, p),
      setEncoderStats: (stats) => encoder.setStats(stats),
    };
  }
  await initBackend();
  // predict leaves a tensor behind per call (seen in tests): tidy frees it.
  const modelPredict = (batch: EncodedBatch, p: ParamSource) =>
    tf.tidy(() => predict(model, batch, batchRows(model, batch, p)));
  return {
    kind: 'model',
    model,
    setEncoderStats: (stats) => encoder.setStats(stats),
    score: (user, context, candidates) => modelPredict(encode(user, context, candidates), params),
    encode,
    predict: modelPredict,
  };
}
