/**
 * The model compute contract: what a worker hands a model (an {@link EncodedBatch} plus the rows it
 * pulled from the shards) and what it gets back (predictions scored before the update, the loss and
 * per-table gradients aligned with the rows). Everything here is plain typed arrays so a batch can
 * cross a worker-thread boundary with a transfer list.
 */

/** One raw training or scoring example, as it arrives in a feedback event. */
export interface Example {
  /** Raw field values: categorical strings/numbers, numeric values, token lists. */
  features: Record<string, string | number | string[]>;
  /** 0/1 for classification. */
  label: number;
  /** Example weight (default 1), e.g. fake-negative weighting for delayed feedback. */
  weight?: number;
  /** Event time in ms since the epoch, carried for freshness measurement. */
  ts?: number;
  /** The logging policy's propensity of its impression (off-policy evaluation); not a model input. */
  propensity?: number;
}

/** The sparse inputs of one sparse table for a batch. */
export interface SparseInput {
  /** Table id (index in the model spec's `tables`). */
  table: number;
  /** Unique feature ids of the batch, interleaved [lo0, hi0, lo1, hi1, ...]: u rows. */
  keys: Uint32Array;
  /** How many examples touch each unique key (length u); the shard uses it for admission. */
  counts: Uint32Array;
  /** Slots per example: one per categorical field, `maxTokens` per token-list field. */
  slots: number;
  /** batch × slots: row index into `keys` (0..u-1), −1 for an empty slot. */
  index: Int32Array;
  /** batch × slots: pooling weight of each slot (1 for a categorical value, 1/n for n tokens, 0 empty). */
  slotWeights?: Float32Array;
}

/** A mini-batch encoded for a model: ids resolved, numerics transformed. */
export interface EncodedBatch {
  size: number;
  /** One entry per sparse table the model reads, in table-id order. */
  sparse: SparseInput[];
  /** size × numericDim, row-major. */
  numeric: Float32Array;
  labels: Float32Array;
  weights: Float32Array;
  /** Table ids of the dense weight tensors the model needs (pull each whole). */
  denseTables: number[];
}

/**
 * Parameters for a batch, indexed by table id: for a sparse table the rows of its unique keys
 * (u × dim, row-major, in the order of `SparseInput.keys`); for a dense table the whole tensor.
 * Tables the batch does not use may be `undefined`.
 */
export type BatchRows = readonly (Float32Array | undefined)[];

/** What {@link computeGradients} returns. */
export interface GradientResult {
  /** Predicted probabilities, scored BEFORE the update (progressive validation). */
  preds: Float32Array;
  /** Weighted mean binary cross-entropy of the batch. */
  loss: number;
  /** d loss / d params per table id, aligned with `rows`: u × dim per sparse table, the tensor per dense table. */
  grads: (Float32Array | undefined)[];
}

/** Every typed array buffer of a batch, for a worker-thread transfer list. */
export function batchTransferList(batch: EncodedBatch): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  const add = (a: ArrayBufferView | undefined) => {
    if (a && a.buffer instanceof ArrayBuffer) out.add(a.buffer);
  };
  for (const s of batch.sparse) {
    add(s.keys);
    add(s.counts);
    add(s.index);
    add(s.slotWeights);
  }
  add(batch.numeric);
  add(batch.labels);
  add(batch.weights);
  return [...out];
}
