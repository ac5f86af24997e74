import type { InitSpec } from './model-spec.js';
import { fmix32 } from './keys.js';

/**
 * Deterministic row initialisation: a row's initial values depend only on (spec, key), so a
 * shard creating the row, a worker pulling a not-yet-admitted row and a serving node scoring an
 * unknown feature all see the same default embedding.
 */
export function initRow(
  spec: InitSpec,
  lo: number,
  hi: number,
  out: Float32Array,
  at = 0,
  dim = out.length,
): void {
  if (spec.kind === 'zeros') {
    out.fill(0, at, at + dim);
    return;
  }
  let s = fmix32((lo ^ fmix32(hi ^ spec.seed)) >>> 0) || 1;
  const next = () => {
    // xorshift32: cheap and good enough for initial weights
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) + 0.5) / 4294967296;
  };
  const skip = spec.skip ?? 0;
  if (spec.kind === 'uniform') {
    for (let i = 0; i < skip; i++) next();
    for (let i = 0; i < dim; i++) out[at + i] = (next() * 2 - 1) * spec.scale;
    return;
  }
  // Box–Muller: two normals per pair of uniforms; a part starting mid-pair takes its second.
  for (let i = 0; i < skip - (skip % 2); i++) next();
  let i = 0;
  if (skip % 2 === 1 && dim > 0) {
    const r = Math.sqrt(-2 * Math.log(next())) * spec.std;
    out[at] = r * Math.sin(2 * Math.PI * next());
    i = 1;
  }
  for (; i < dim; i += 2) {
    const r = Math.sqrt(-2 * Math.log(next())) * spec.std;
    const th = 2 * Math.PI * next();
    out[at + i] = r * Math.cos(th);
    if (i + 1 < dim) out[at + i + 1] = r * Math.sin(th);
  }
}
