import type { Example, FeatureSpecInput, Model } from '../src/index.js';
import { initRows, type EncodedBatch } from '../src/index.js';

/** Deterministic PRNG (mulberry32) so every run checks the same numbers. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function normal(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}

/** Every kind of field, split into user and item towers. */
export const mixedSpec: FeatureSpecInput = {
  fields: [
    { kind: 'categorical', name: 'user', tower: 'user' },
    { kind: 'categorical', name: 'country', tower: 'user', emptyAsMissing: true },
    { kind: 'tokens', name: 'query', tower: 'user', maxTokens: 3 },
    { kind: 'numeric', name: 'age', tower: 'user', transform: 'standardise' },
    { kind: 'numeric', name: 'clicks', tower: 'user', transform: 'log1p' },
    { kind: 'categorical', name: 'item', tower: 'item' },
    {
      kind: 'numeric',
      name: 'price',
      tower: 'item',
      buckets: [10, 100],
      keepNumeric: true,
      transform: 'log1p',
    },
    { kind: 'cross', name: 'user_x_item', tower: 'item', fields: ['user', 'item'] },
  ],
};

/** Small examples over {@link mixedSpec}: repeated values and tokens, missing fields. */
export function mixedExamples(n: number, seed = 1): Example[] {
  const r = rng(seed);
  const words = ['red', 'shoes', 'cheap', 'running', 'blue'];
  const out: Example[] = [];
  for (let i = 0; i < n; i++) {
    const features: Example['features'] = {
      user: `u${Math.floor(r() * 4)}`,
      query: Array.from(
        { length: 1 + Math.floor(r() * 4) },
        () => words[Math.floor(r() * words.length)]!,
      ).join(' '),
      age: 20 + Math.floor(r() * 40),
      clicks: Math.floor(r() * 30),
      item: `i${Math.floor(r() * 5)}`,
      price: r() * 200,
    };
    if (r() < 0.7) features.country = r() < 0.5 ? 'de' : 'fr';
    out.push({ features, label: r() < 0.4 ? 1 : 0, weight: 0.5 + r() });
  }
  return out;
}

/** Fresh-cluster rows plus noise, so gradients are far from the (symmetric) initial point. */
export function noisyRows(model: Model, batch: EncodedBatch, seed: number, scale = 0.3): Float32Array[] {
  const r = rng(seed);
  const rows = initRows(model, batch);
  return rows.map((x) => {
    const y = new Float32Array(x ?? []);
    for (let i = 0; i < y.length; i++) y[i] = y[i]! + scale * normal(r);
    return y;
  });
}
