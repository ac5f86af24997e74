import { initRow, type ModelSpec } from '@freshet/protocol';
import type { BatchRows, EncodedBatch, Example } from './batch.js';
import { FeatureEncoder } from './encoder.js';
import {
  compileModelConfig,
  type ModelConfig,
  type ModelConfigInput,
  type ModelLayout,
} from './model-config.js';

/** A compiled model: its shared spec, its layout in the tables, and its feature encoder. */
export interface Model {
  /** The tables the cluster shares (send it to the shards). */
  readonly spec: ModelSpec;
  /** The validated config, defaults applied (JSON: a worker thread rebuilds the model from it). */
  readonly config: ModelConfig;
  readonly layout: ModelLayout;
  /** Encodes raw examples; updates the running statistics of standardised numeric columns. */
  encode(examples: readonly Example[]): EncodedBatch;
  /** The encoder itself, for its running statistics. */
  readonly encoder: FeatureEncoder;
}

/**
 * Compiles a model config (zod-validated; throws `CONFIG` naming every problem). Cheap enough to
 * call once per worker thread with the same JSON config.
 */
export function createModel(config: ModelConfigInput | ModelConfig): Model {
  const { config: cfg, spec, layout } = compileModelConfig(config);
  const encoder = new FeatureEncoder(layout.features, layout.sparseTables, layout.denseTables);
  return {
    spec,
    config: cfg,
    layout,
    encoder,
    encode: (examples) => encoder.encode(examples),
  };
}

/**
 * The rows a batch would get from a fresh cluster: each table's deterministic init (initRow) for
 * the batch's keys, and the whole of each dense table. For tests, benchmarks and cold serving.
 */
export function initRows(model: Model, batch: EncodedBatch): (Float32Array | undefined)[] {
  const rows: (Float32Array | undefined)[] = new Array<Float32Array | undefined>(model.spec.tables.length);
  for (const s of batch.sparse) {
    const t = model.spec.tables[s.table]!;
    const u = s.keys.length / 2;
    const out = new Float32Array(u * t.dim);
    for (let i = 0; i < u; i++) initRow(t.init, s.keys[2 * i]!, s.keys[2 * i + 1]!, out, i * t.dim, t.dim);
    rows[s.table] = out;
  }
  for (const id of batch.denseTables) {
    const t = model.spec.tables[id]!;
    const out = new Float32Array(t.dim);
    initRow(t.init, 0, 0, out, 0, t.dim);
    rows[id] = out;
  }
  return rows;
}

export type { BatchRows };
