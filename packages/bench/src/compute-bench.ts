import { FreshetError } from '@freshet/protocol';
import {
  computeGradients,
  createModel,
  criteoWideDeepConfig,
  initBackend,
  initRows,
  type BackendPreference,
  type Example,
  type ModelKind,
} from '@freshet/model';

/** Options of {@link runComputeBench}. */
export interface ComputeBenchOptions {
  /** Batch sizes to measure (default [256, 512]). */
  batches?: number[];
  /** Timed steps per batch size, after warm-up (default 30). */
  steps?: number;
  backend?: BackendPreference;
  /** Model kinds to measure on the Criteo features (default ['wide-deep']). */
  models?: ModelKind[];
}

/**
 * Measures computeGradients on one thread with synthetic Criteo-shaped examples (13 integers, 26
 * categoricals with Zipf-like values): by default the peer's wide&deep (26 × 16 + 13 → 128 → 64
 * → 1 + wide). Encode is excluded (reported apart, cold cache); the JS gather/scatter is included.
 * Returns one JSON-able object: per model and batch size examples/s and ms/step, the backend, and
 * `wide_deep_b<B>_examples_per_s` headline numbers.
 */
export async function runComputeBench(opts: ComputeBenchOptions = {}): Promise<Record<string, unknown>> {
  const batches = opts.batches ?? [256, 512];
  const steps = opts.steps ?? 30;
  const kinds = opts.models ?? ['wide-deep'];
  if (batches.some((b) => !Number.isInteger(b) || b < 1) || !Number.isInteger(steps) || steps < 1) {
    throw new FreshetError('CONFIG', 'bench: batches and steps must be positive integers');
  }
  const info = await initBackend(opts.backend ?? 'auto');
  let seed = 12345;
  const rnd = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed / 4294967296;
  };
  const results: Record<string, Record<string, { examples_per_s: number }>> = {};
  for (const kind of kinds) {
    const model = createModel(criteoWideDeepConfig({ kind, name: `bench-${kind}` }));
    const perBatch: Record<string, { examples_per_s: number }> = {};
    for (const b of batches) {
      const examples: Example[] = [];
      for (let i = 0; i < b; i++) {
        const features: Record<string, string | number> = {};
        for (let f = 1; f <= 13; f++) features[`I${f}`] = Math.floor(rnd() * 200);
        // Zipf-like values: a realistic share of keys repeats within a batch.
        for (let f = 1; f <= 26; f++) features[`C${f}`] = String(Math.floor(1 / (rnd() + 1e-4)));
        examples.push({ features, label: rnd() < 0.25 ? 1 : 0 });
      }
      const e0 = performance.now();
      const batch = model.encode(examples);
      const encodeMs = performance.now() - e0;
      const rows = initRows(model, batch);
      for (let i = 0; i < 3; i++) computeGradients(model, batch, rows);
      const t0 = performance.now();
      for (let i = 0; i < steps; i++) computeGradients(model, batch, rows);
      const ms = (performance.now() - t0) / steps;
      perBatch[`b${b}`] = {
        examples_per_s: Math.round((b / ms) * 1000),
        ms_per_step: round2(ms),
        encode_ms_cold: round2(encodeMs),
        unique_keys: batch.sparse[0]!.keys.length / 2,
      } as { examples_per_s: number };
    }
    results[kind] = perBatch;
  }
  const headline = Object.entries(results['wide-deep'] ?? {}).map(([b, r]): [string, number] => [
    `wide_deep_${b}_examples_per_s`,
    r.examples_per_s,
  ]);
  return {
    bench: 'model-compute',
    threads: 1,
    backend: info.backend,
    simd: info.simd,
    steps,
    ...Object.fromEntries(headline),
    models: results,
  };
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
