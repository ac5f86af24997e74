import { createModel, type Example, type ModelConfigInput } from '@freshet/model';
import { FreshetError } from '@freshet/protocol';

/** One example as the `lr` model sees it: coordinate ids and their values (bias included). */
export interface SparseVector {
  ids: Int32Array;
  values: Float64Array;
}

/**
 * The examples as sparse vectors over the exact inputs of Freshet's `lr` model: one coordinate
 * per wide-table key (its slot weight as value: 1 for a categorical value, 1/n for each of n
 * tokens), one per numeric column (the encoder's transformed value) and the bias (1). Encoded
 * with the model's own encoder in chunks of `chunk` examples, the chunks the trainer encodes, so
 * running statistics of standardised numerics match it value for value.
 */
export function lrSparseVectors(
  config: ModelConfigInput,
  examples: readonly Example[],
  chunk: number,
): { vectors: SparseVector[]; coordinates: number } {
  if (config.kind !== 'lr') {
    throw new FreshetError('CONFIG', `sequential FTRL is the reference of the lr model, not ${config.kind}`);
  }
  const model = createModel(config);
  const { wide, numericDim } = model.layout;
  const ids = new Map<string, number>();
  const id = (k: string) => {
    let v = ids.get(k);
    if (v === undefined) ids.set(k, (v = ids.size));
    return v;
  };
  const bias = id('bias');
  const numericIds = Array.from({ length: numericDim }, (_, j) => id(`numeric:${j}`));
  const vectors: SparseVector[] = [];
  for (let from = 0; from < examples.length; from += chunk) {
    const batch = model.encode(examples.slice(from, from + chunk));
    const s = batch.sparse.find((t) => t.table === wide);
    for (let i = 0; i < batch.size; i++) {
      const idsOf: number[] = [bias];
      const valuesOf: number[] = [1];
      if (s) {
        for (let k = 0; k < s.slots; k++) {
          const row = s.index[i * s.slots + k]!;
          if (row < 0) continue;
          const w = s.slotWeights ? s.slotWeights[i * s.slots + k]! : 1;
          if (w === 0) continue;
          // a key in several slots is one coordinate whose value is their sum (x is a vector)
          const c = id(`${s.keys[2 * row]!}:${s.keys[2 * row + 1]!}`);
          const at = idsOf.indexOf(c);
          if (at >= 0) valuesOf[at]! += w;
          else {
            idsOf.push(c);
            valuesOf.push(w);
          }
        }
      }
      for (let j = 0; j < numericDim; j++) {
        const x = batch.numeric[i * numericDim + j]!;
        if (x === 0) continue;
        idsOf.push(numericIds[j]!);
        valuesOf.push(x);
      }
      vectors.push({ ids: Int32Array.from(idsOf), values: Float64Array.from(valuesOf) });
    }
  }
  return { vectors, coordinates: ids.size };
}

/** FTRL-Proximal hyper-parameters, per example (as in the paper). */
export interface FtrlParams {
  alpha: number;
  beta: number;
  l1: number;
  l2: number;
}

/**
 * Per-example FTRL-Proximal logistic regression in float64, McMahan et al. 2013, Algorithm 1,
 * written from the paper and sharing no code with the shard's optimizer: the reference a batched
 * Freshet run is measured against. Each example is scored before it is trained on, so the
 * returned predictions are progressive, like the trainer's.
 */
export function sequentialFtrl(
  vectors: readonly SparseVector[],
  labels: ArrayLike<number>,
  coordinates: number,
  h: FtrlParams,
  weights?: ArrayLike<number>,
): Float64Array {
  const z = new Float64Array(coordinates);
  const n = new Float64Array(coordinates);
  const preds = new Float64Array(vectors.length);
  const weightOf = (k: number) => {
    const zk = z[k]!;
    if (Math.abs(zk) <= h.l1) return 0;
    return -(zk - Math.sign(zk) * h.l1) / ((h.beta + Math.sqrt(n[k]!)) / h.alpha + h.l2);
  };
  for (let e = 0; e < vectors.length; e++) {
    const { ids, values } = vectors[e]!;
    const w = new Float64Array(ids.length);
    let logit = 0;
    for (let j = 0; j < ids.length; j++) {
      w[j] = weightOf(ids[j]!);
      logit += w[j]! * values[j]!;
    }
    const p = 1 / (1 + Math.exp(-Math.max(-35, Math.min(35, logit))));
    preds[e] = p;
    const scale = (p - labels[e]!) * (weights ? weights[e]! : 1);
    for (let j = 0; j < ids.length; j++) {
      const k = ids[j]!;
      const g = scale * values[j]!;
      const sigma = (Math.sqrt(n[k]! + g * g) - Math.sqrt(n[k]!)) / h.alpha;
      z[k] = z[k]! + g - sigma * w[j]!;
      n[k] = n[k]! + g * g;
    }
  }
  return preds;
}
