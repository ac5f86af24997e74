import { FreshetError } from '@freshet/protocol';
import type { Example } from './batch.js';
import { initBackend, type BackendPreference } from './backend.js';
import { computeGradients } from './compute.js';
import { criteoWideDeepConfig } from './criteo.js';
import { createModel, initRows } from './model.js';

/** Options of {@link runComputeBench}. */
export interface ComputeBenchOptions {
  /** Batch sizes to measure (default [256, 512]). */
  batches?: number[];
  /** Timed steps per batch size, after warm-up (default 30). */
  steps?: number;
  backend?: BackendPreference;
}

/**
 * Measures computeGradients of the Criteo wide&deep (26 × 16 + 13 → 128 → 64 → 1 + wide) on one
 * thread with synthetic Criteo-shaped examples: encode excluded, gather/scatter included.
 * Returns one JSON-able object: examples/s and ms/step per batch size, and the backend.
 */
export async function runComputeBench(opts: ComputeBenchOptions = {}): Promise<Record<string, unknown>> {
  const batches = opts.batches ?? [256, 512];
  const steps = opts.steps ?? 30;
  if (batches.some((b) => !Number.isInteger(b) || b < 1) || !Number.isInteger(steps) || steps < 1) {
    throw new FreshetError('CONFIG', 'bench: batches and steps must be positive integers');
  }
  const info = await initBackend(opts.backend ?? 'auto');
  const model = createModel(criteoWideDeepConfig());
  const results: Record<string, unknown> = {};
  let seed = 12345;
  const rnd = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed / 4294967296;
  };
  for (const b of batches) {
    const examples: Example[] = [];
    for (let i = 0; i < b; i++) {
      const features: Record<string, string | number> = {};
      for (let f = 1; f <= 13; f++) features[`I${f}`] = Math.floor(rnd() * 200);
      // Zipf-ish values: a realistic share of keys repeats within a batch
      for (let f = 1; f <= 26; f++) features[`C${f}`] = String(Math.floor(1 / (rnd() + 1e-4)));
      examples.push({ features, label: rnd() < 0.25 ? 1 : 0 });
    }
    const batch = model.encode(examples);
    const rows = initRows(model, batch);
    for (let i = 0; i < 3; i++) computeGradients(model, batch, rows);
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) computeGradients(model, batch, rows);
    const ms = (performance.now() - t0) / steps;
    results[`b${b}`] = {
      ms_per_step: Math.round(ms * 100) / 100,
      examples_per_s: Math.round((b / ms) * 1000),
      unique_keys: batch.sparse[0]!.keys.length / 2,
    };
  }
  return {
    bench: 'model-compute',
    model: 'wide-deep',
    threads: 1,
    backend: info.backend,
    simd: info.simd,
    steps,
    ...results,
  };
}
