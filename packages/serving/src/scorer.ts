import { initBackend, predict, type EncodedBatch, type Example, type Model } from '@freshet/model';
import { FreshetError, type Features } from '@freshet/protocol';
import { FastWideDeep, type ParamSource } from './fast-wide-deep.js';
import type { Replica } from './replica.js';
import type { Candidate } from './api-schemas.js';

/** How scores are computed: the hand-written forward pass, or @freshet/model's (tfjs) predict. */
export type ScorerKind = 'fast' | 'model';

/** Turns one request (user, context, candidates) into a probability per candidate. */
export interface Scorer {
  readonly kind: ScorerKind;
  readonly model: Model;
  score(user: string, context: Features | undefined, candidates: readonly Candidate[]): Float32Array;
}

/** The examples a request stands for: context, then user and item ids, then item features. */
export function requestExamples(
  fields: { user: string; item: string },
  user: string,
  context: Features | undefined,
  candidates: readonly Candidate[],
): Example[] {
  const shared: Example['features'] = { ...context, [fields.user]: user };
  return candidates.map((c) => ({
    features: c.features
      ? { ...shared, [fields.item]: c.item, ...c.features }
      : { ...shared, [fields.item]: c.item },
    label: 0,
  }));
}

/** Parameters of one batch read from the replica (unknown keys: the deterministic default). */
export function replicaParams(replica: Replica): ParamSource {
  return {
    rows(table, keys) {
      const dim = replica.spec.tables[table]!.dim;
      const out = new Float32Array((keys.length >>> 1) * dim);
      replica.gather(table, keys, out);
      return out;
    },
    dense: (table) => replica.dense(table),
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
  opts: { kind: 'auto' | ScorerKind; fields: { user: string; item: string } },
): Promise<Scorer> {
  const params = replicaParams(replica);
  const fast = model.layout.kind === 'wide-deep';
  if (opts.kind === 'fast' && !fast)
    throw new FreshetError(
      'CONFIG',
      `scorer "fast" has no forward pass for ${model.layout.kind}; use auto or model`,
    );
  const encode = (user: string, context: Features | undefined, candidates: readonly Candidate[]) =>
    model.encode(requestExamples(opts.fields, user, context, candidates));
  if (fast && opts.kind !== 'model') {
    const f = new FastWideDeep(model.layout);
    return {
      kind: 'fast',
      model,
      score: (user, context, candidates) => f.predict(encode(user, context, candidates), params),
    };
  }
  await initBackend();
  return {
    kind: 'model',
    model,
    score: (user, context, candidates) => {
      const batch = encode(user, context, candidates);
      return predict(model, batch, batchRows(model, batch, params));
    },
  };
}
