import { FreshetError, bucketId, featureId, tokenizeText } from '@freshet/protocol';
import type { EncodedBatch, Example, SparseInput } from './batch.js';
import {
  NUMERIC_INPUT_LIMIT,
  NUMERIC_LIMIT,
  type CompiledFeatureSpec,
  type FieldSpec,
} from './feature-spec.js';
import { KeyIndex } from './key-index.js';

/** Running mean and variance (Welford) of one standardised numeric column. */
export interface RunningStats {
  n: number;
  mean: number;
  m2: number;
}

type Raw = string | number | string[] | undefined;

interface NumericPlan {
  name: string;
  log: boolean;
  standardise: boolean;
  missing: number;
  min: number;
  max: number;
  stats: RunningStats;
}

interface SparsePlan {
  field: FieldSpec;
  slot: number;
  width: number;
  split?: RegExp;
}

/** Ids are cached per field and value: hashing a string costs more than a map hit. */
const ID_CACHE_MAX = 1 << 18;

/**
 * Turns raw examples into an {@link EncodedBatch}. Stateful only in the running statistics of
 * standardised numeric columns, which every encoded batch updates (see {@link runningStats})
 * unless they are frozen (serving).
 */
export class FeatureEncoder {
  private readonly plans: SparsePlan[];
  private readonly numeric: NumericPlan[];
  private readonly byName: Map<string, FieldSpec>;
  private readonly keyIndex = new KeyIndex(4096);
  /** Per field name: value → slot in idLoHi. */
  private readonly idCache = new Map<string, Map<string, number>>();
  private idLoHi = new Uint32Array(1024);
  private idCount = 0;
  private readonly scratch = new Uint32Array(2);
  private statsFrozen = false;
  /** Numeric values clipped so far, by field name. */
  private readonly clippedCounts = new Map<string, number>();

  constructor(
    private readonly compiled: CompiledFeatureSpec,
    private readonly sparseTables: number[],
    private readonly denseTables: number[],
  ) {
    this.byName = new Map(compiled.spec.fields.map((f) => [f.name, f]));
    this.plans = compiled.sparse.map((s) => {
      const field = this.byName.get(s.name)!;
      const plan: SparsePlan = { field, slot: s.slot, width: s.width };
      if (field.kind === 'tokens' && field.separator !== undefined)
        plan.split = new RegExp(field.separator, 'u');
      return plan;
    });
    this.numeric = compiled.numeric.map((c) => {
      const f = this.byName.get(c.name)!;
      if (f.kind !== 'numeric') throw new Error('unreachable: numeric column of a non-numeric field');
      return {
        name: f.name,
        log: f.transform === 'log1p' || f.transform === 'log1p-standardise',
        standardise: f.transform === 'standardise' || f.transform === 'log1p-standardise',
        missing: f.missing,
        min: Math.max(f.clip?.min ?? -NUMERIC_LIMIT, -NUMERIC_LIMIT),
        max: Math.min(f.clip?.max ?? NUMERIC_LIMIT, NUMERIC_LIMIT),
        stats: { n: 0, mean: 0, m2: 0 },
      };
    });
  }

  /** Numeric values clipped to their field's range (raw or transformed) so far, by field name. */
  clipped(): Record<string, number> {
    return Object.fromEntries(this.clippedCounts);
  }

  /** Width of the numeric input. */
  get numericDim(): number {
    return this.numeric.length;
  }

  /** A copy of the running statistics of standardised columns, by field name. */
  runningStats(): Record<string, RunningStats> {
    const out: Record<string, RunningStats> = {};
    for (const p of this.numeric) if (p.standardise) out[p.name] = { ...p.stats };
    return out;
  }

  /**
   * Stops `encode` from updating the running statistics: a serving node standardises with the
   * statistics training saw (set with {@link setRunningStats}), not with its requests'.
   */
  freezeStats(): void {
    this.statsFrozen = true;
  }

  /** Standardised columns' names (empty when the model has none). */
  get standardised(): string[] {
    return this.numeric.filter((p) => p.standardise).map((p) => p.name);
  }

  /** Restores running statistics (e.g. from a checkpoint); unknown names are ignored. */
  setRunningStats(stats: Record<string, RunningStats>): void {
    for (const p of this.numeric) {
      const s = stats[p.name];
      if (s) p.stats = { ...s };
    }
  }

  /** Encodes a batch. Throws `BAD_REQUEST` on an empty batch or a non-finite label/weight. */
  encode(examples: readonly Example[]): EncodedBatch {
    const size = examples.length;
    if (size === 0) throw new FreshetError('BAD_REQUEST', 'empty batch');
    const slots = this.compiled.slots;
    const index = new Int32Array(size * slots).fill(-1);
    const slotWeights = new Float32Array(size * slots);
    const labels = new Float32Array(size);
    const weights = new Float32Array(size);
    const keys = this.keyIndex;
    keys.reset(size * slots);
    let counts = new Uint32Array(size * slots);
    const lastSeen = new Int32Array(size * slots).fill(-1);

    const put = (b: number, slot: number, lo: number, hi: number, w: number) => {
      const k = keys.add(lo, hi);
      index[b * slots + slot] = k;
      slotWeights[b * slots + slot] = w;
      if (lastSeen[k] !== b) {
        lastSeen[k] = b;
        counts[k]!++;
      }
    };

    for (let b = 0; b < size; b++) {
      const ex = examples[b]!;
      const label = ex.label;
      const weight = ex.weight ?? 1;
      if (!Number.isFinite(label) || !Number.isFinite(weight) || weight < 0) {
        throw new FreshetError('BAD_REQUEST', `example ${b}: label and weight must be finite (weight ≥ 0)`);
      }
      labels[b] = label;
      weights[b] = weight;
      const feats = ex.features;
      for (const p of this.plans) {
        const f = p.field;
        if (f.kind === 'tokens') {
          const raw = feats[f.name];
          let tokens: string[];
          if (typeof raw === 'string') tokens = p.split ? raw.split(p.split) : tokenizeText(raw, p.width);
          else if (Array.isArray(raw)) tokens = raw.map(String);
          else if (typeof raw === 'number') tokens = [String(raw)];
          else continue;
          if (f.lowercase) tokens = tokens.map((t) => t.toLowerCase());
          tokens = tokens.filter((t) => t.length > 0).slice(0, p.width);
          const w = 1 / tokens.length;
          tokens.forEach((t, i) => {
            this.id(f.name, t);
            put(b, p.slot + i, this.scratch[0]!, this.scratch[1]!, w);
          });
          continue;
        }
        const v = f.kind === 'cross' ? this.crossValue(f.fields, feats) : this.value(f, feats[f.name]);
        if (v === undefined) continue;
        this.id(f.name, v);
        put(b, p.slot, this.scratch[0]!, this.scratch[1]!, 1);
      }
    }

    const numericDim = this.numeric.length;
    const numeric = new Float32Array(size * numericDim);
    this.numeric.forEach((p, c) => {
      const col = new Float64Array(size);
      let clipped = 0;
      let rawClipped: Uint8Array | undefined;
      for (let b = 0; b < size; b++) {
        let x = toNumber(examples[b]!.features[p.name]) ?? p.missing;
        if (x < p.min || x > p.max) {
          x = x < p.min ? p.min : p.max;
          clipped++;
          (rawClipped ??= new Uint8Array(size))[b] = 1;
        }
        if (p.log) x = x > 0 ? Math.log1p(x) : 0;
        col[b] = x;
      }
      if (p.standardise) {
        // Update first, then apply: the first batch is standardised by its own statistics
        // instead of being divided by an undefined deviation.
        const s = p.stats;
        if (!this.statsFrozen) {
          for (let b = 0; b < size; b++) {
            s.n++;
            const d = col[b]! - s.mean;
            s.mean += d / s.n;
            s.m2 += d * (col[b]! - s.mean);
          }
        }
        const sd = s.n > 1 ? Math.sqrt(s.m2 / (s.n - 1)) : 1;
        const inv = sd > 1e-6 ? 1 / sd : 1;
        for (let b = 0; b < size; b++) col[b] = (col[b]! - s.mean) * inv;
      }
      for (let b = 0; b < size; b++) {
        // what reaches the model is bounded too (a raw `none` value up to 1e9; a near-constant
        // standardised column divided by a tiny deviation)
        let z = col[b]!;
        if (!(Math.abs(z) <= NUMERIC_INPUT_LIMIT)) {
          z = Number.isNaN(z) ? 0 : Math.sign(z) * NUMERIC_INPUT_LIMIT;
          if (!rawClipped?.[b]) clipped++; // one count per value
        }
        numeric[b * numericDim + c] = z;
      }
      if (clipped) this.clippedCounts.set(p.name, (this.clippedCounts.get(p.name) ?? 0) + clipped);
    });

    const u = keys.size;
    counts = counts.slice(0, u);
    const keyArray = keys.keys();
    // Every sparse table reads the same fields, so they share one key set and slot layout.
    const sparse: SparseInput[] = this.sparseTables.map((table) => ({
      table,
      keys: keyArray,
      counts,
      slots,
      index,
      slotWeights,
    }));
    return { size, sparse, numeric, labels, weights, denseTables: [...this.denseTables] };
  }

  /** The categorical value of a field for hashing, or undefined when missing. */
  private value(f: FieldSpec, raw: Raw): string | undefined {
    if (f.kind === 'categorical') return categoricalValue(raw, f.emptyAsMissing);
    if (f.kind === 'numeric' && f.buckets) {
      const x = toNumber(raw) ?? f.missing;
      return `b${bucketOf(f.buckets, x)}`;
    }
    return undefined;
  }

  private crossValue(fields: string[], feats: Example['features']): string | undefined {
    const parts: string[] = [];
    for (const name of fields) {
      const v = this.value(this.byName.get(name)!, feats[name]);
      if (v === undefined) return undefined;
      parts.push(v);
    }
    return parts.join('\u0002');
  }

  /** {@link valueId} into `scratch`, through a bounded per-field cache. */
  private id(field: string, value: string): void {
    let cache = this.idCache.get(field);
    if (!cache) {
      cache = new Map();
      this.idCache.set(field, cache);
    }
    const hit = cache.get(value);
    if (hit !== undefined) {
      this.scratch[0] = this.idLoHi[2 * hit]!;
      this.scratch[1] = this.idLoHi[2 * hit + 1]!;
      return;
    }
    valueId(this.compiled.spec.hashBuckets, field, value, this.scratch);
    if (this.idCount >= ID_CACHE_MAX) {
      // Dropping everything is cheaper than LRU bookkeeping; hot values come back within a batch.
      for (const c of this.idCache.values()) c.clear();
      this.idCount = 0;
    }
    if (2 * this.idCount + 2 > this.idLoHi.length) {
      const grown = new Uint32Array(this.idLoHi.length * 2);
      grown.set(this.idLoHi);
      this.idLoHi = grown;
    }
    const slot = this.idCount++;
    cache.set(value, slot);
    this.idLoHi[2 * slot] = this.scratch[0]!;
    this.idLoHi[2 * slot + 1] = this.scratch[1]!;
  }
}

function toNumber(raw: Raw): number | undefined {
  if (typeof raw === 'number') return Number.isFinite(raw) ? raw : undefined;
  if (typeof raw === 'string' && raw.trim() !== '') {
    const x = Number(raw);
    return Number.isFinite(x) ? x : undefined;
  }
  return undefined;
}

/**
 * The string a categorical value is hashed as: a string as it is, a finite number as its decimal
 * string; undefined (an empty slot) for anything else, and for '' when `emptyAsMissing`.
 */
export function categoricalValue(raw: Raw, emptyAsMissing: boolean): string | undefined {
  if (typeof raw === 'number') return Number.isFinite(raw) ? String(raw) : undefined;
  if (typeof raw !== 'string') return undefined;
  if (raw === '' && emptyAsMissing) return undefined;
  return raw;
}

/**
 * The row id of a sparse value: `featureId(field, value)`, or with a bounded id space (the feature
 * spec's `hashBuckets`) `bucketId(field, value, hashBuckets)`.
 */
export function valueId(
  hashBuckets: number | undefined,
  field: string,
  value: string,
  out: Uint32Array,
  at = 0,
): void {
  if (hashBuckets === undefined) featureId(field, value, out, at);
  else bucketId(field, value, hashBuckets, out, at);
}

/** Index of the bucket of x: the number of boundaries ≤ x (binary search). */
export function bucketOf(boundaries: readonly number[], x: number): number {
  let lo = 0;
  let hi = boundaries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (boundaries[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
