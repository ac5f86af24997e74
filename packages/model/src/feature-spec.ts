import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { FreshetError } from '@freshet/protocol';

const fieldName = z
  .string()
  .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'field names are 1-64 chars of [A-Za-z0-9_.:-]');
/** Which tower of a two-tower model a field feeds; other models ignore it. */
const tower = z.enum(['user', 'item']).default('user');

/** A categorical field: each value becomes one 64-bit id, salted by the field name. */
export const categoricalFieldSchema = z.object({
  kind: z.literal('categorical'),
  name: fieldName,
  tower,
  /** Treat an empty string as missing (an empty slot) instead of as a value of its own. */
  emptyAsMissing: z.boolean().default(false),
});

/**
 * The bounds of numeric features. Raw values are clipped to ±1e9 (unless the field's `clip`
 * narrows it) before the transform, so `log1p` and the running statistics of `standardise` see
 * no more than that; what reaches the model (after the transform) is clipped to ±1e6. One
 * outlier (a price of 3e38) would otherwise overflow a gradient's square in float32 and leave the
 * optimizer's state at +Infinity, which freezes those weights for good. With inputs ≤ 1e6 even a
 * factorization machine's pairwise term (x² ≤ 1e12, example weight ≤ 1000) keeps every gradient
 * far below MAX_ABS_GRADIENT (2^53) of the shards. Both clips are counted per field.
 */
export const NUMERIC_LIMIT = 1e9;
export const NUMERIC_INPUT_LIMIT = 1e6;

/**
 * A numeric field. `log1p` maps x > 0 to log(1 + x) and anything else (missing, ≤ 0) to 0, as the
 * PyTorch wide&deep peer does; `standardise` subtracts a running mean and divides by a running
 * standard deviation (Welford, updated by every encoded batch); `log1p-standardise` does both.
 * With `buckets` the value also (or only, when `keepNumeric` is false) becomes a categorical id:
 * the index of its bucket among the boundaries.
 */
export const numericFieldSchema = z
  .object({
    kind: z.literal('numeric'),
    name: fieldName,
    tower,
    transform: z.enum(['none', 'log1p', 'standardise', 'log1p-standardise']).default('none'),
    /** Value used when the field is missing or not a finite number (before the transform). */
    missing: z.number().default(0),
    /** Sorted, strictly increasing bucket boundaries; values in [b[i-1], b[i]) go to bucket i. */
    buckets: z.array(z.number()).min(1).max(4096).optional(),
    /** With `buckets`: keep the transformed value as a numeric input too. */
    keepNumeric: z.boolean().default(false),
    /**
     * The range raw values are clipped to before the transform; default (and at most)
     * ±{@link NUMERIC_LIMIT}.
     * Clipped values are counted ({@link FeatureEncoder.clipped}).
     */
    clip: z.object({ min: z.number(), max: z.number() }).optional(),
  })
  .superRefine((f, ctx) => {
    if (f.clip && !(f.clip.min < f.clip.max)) {
      ctx.addIssue({ code: 'custom', message: `clip of "${f.name}": min must be < max`, path: ['clip'] });
    }
    if (!f.buckets) return;
    for (let i = 1; i < f.buckets.length; i++) {
      if (!(f.buckets[i]! > f.buckets[i - 1]!)) {
        ctx.addIssue({
          code: 'custom',
          message: `bucket boundaries of "${f.name}" must be strictly increasing`,
          path: ['buckets', i],
        });
        return;
      }
    }
  });

/**
 * A token list (e.g. a search query): each token becomes an id of the field, and the field's
 * embedding is the mean of its tokens' embeddings. A string value is split on `separator`.
 */
export const tokensFieldSchema = z.object({
  kind: z.literal('tokens'),
  name: fieldName,
  tower,
  /** Tokens kept per example (the first ones); the field takes this many slots. */
  maxTokens: z.number().int().min(1).max(256).default(16),
  /**
   * Regular expression source used to split a string value. Without one, a string is split by
   * @freshet/protocol's `tokenizeText` (lowercase runs of letters and digits), the tokenizer the
   * joiner applies to queries, so training and serving see the same tokens.
   */
  separator: z.string().min(1).optional(),
  lowercase: z.boolean().default(true),
});

/** A cross of two or more categorical (or bucketised numeric) fields: one id per value combination. */
export const crossFieldSchema = z.object({
  kind: z.literal('cross'),
  name: fieldName,
  tower,
  fields: z.array(fieldName).min(2).max(8),
});

export const fieldSchema = z.discriminatedUnion('kind', [
  categoricalFieldSchema,
  numericFieldSchema,
  tokensFieldSchema,
  crossFieldSchema,
]);
export type FieldSpec = z.infer<typeof fieldSchema>;

/** How raw example fields become model inputs. Usually a JSON file, see {@link readFeatureSpec}. */
export const featureSpecSchema = z.object({
  fields: z.array(fieldSchema).min(1).max(1024),
  /**
   * A bounded id space: every sparse value (of every field, tokens and crosses included) becomes
   * one of this many rows, `crc32("<field>:<value>") mod hashBuckets` (@freshet/protocol's
   * `bucketId`), shared by all fields, as DLRM-style models and the PyTorch wide&deep peer hash
   * (2^20 rows). Memory is bounded by the rows; values collide. Unset (the default), each value
   * gets its own collision-free 64-bit id. `freshet user forget` cannot take a user out of
   * shared rows (it says so and exits 1): a bounded id space is for data without that obligation.
   */
  hashBuckets: z
    .number()
    .int()
    .min(2)
    .max(2 ** 31)
    .optional(),
});
export type FeatureSpec = z.infer<typeof featureSpecSchema>;
export type FeatureSpecInput = z.input<typeof featureSpecSchema>;

/** One sparse field's place in the slot layout shared by the model's sparse tables. */
export interface SparseField {
  name: string;
  kind: 'categorical' | 'bucket' | 'tokens' | 'cross';
  tower: 'user' | 'item';
  /** First slot of the field. */
  slot: number;
  /** Slots it takes (1, or maxTokens for token lists). */
  width: number;
}

/** One numeric input column. */
export interface NumericColumn {
  name: string;
  tower: 'user' | 'item';
}

/** A feature spec with defaults applied, cross-references checked and the slot layout fixed. */
export interface CompiledFeatureSpec {
  spec: FeatureSpec;
  /** Sparse fields in slot order. */
  sparse: SparseField[];
  /** Total slots per example. */
  slots: number;
  numeric: NumericColumn[];
}

/**
 * Validates a feature spec and fixes its layout. Throws a `CONFIG` FreshetError that names every
 * problem (unknown or duplicate fields, crosses of non-categorical fields, bad buckets).
 *
 * `towerOrder` puts user-tower fields before item-tower fields (two-tower models slice by tower).
 */
export function compileFeatureSpec(input: unknown, towerOrder = false): CompiledFeatureSpec {
  const parsed = featureSpecSchema.safeParse(input);
  if (!parsed.success) {
    throw new FreshetError('CONFIG', `invalid feature spec: ${z.prettifyError(parsed.error)}`);
  }
  const spec = parsed.data;
  const problems: string[] = [];
  const byName = new Map<string, FieldSpec>();
  for (const f of spec.fields) {
    if (byName.has(f.name)) problems.push(`duplicate field "${f.name}"`);
    byName.set(f.name, f);
  }
  for (const f of spec.fields) {
    if (f.kind !== 'cross') continue;
    for (const g of f.fields) {
      const ref = byName.get(g);
      if (!ref) problems.push(`cross "${f.name}" refers to unknown field "${g}"`);
      else if (ref.kind === 'cross' || ref.kind === 'tokens' || (ref.kind === 'numeric' && !ref.buckets)) {
        problems.push(`cross "${f.name}" needs categorical or bucketised fields, "${g}" is ${ref.kind}`);
      }
    }
    if (new Set(f.fields).size !== f.fields.length) problems.push(`cross "${f.name}" repeats a field`);
  }
  if (problems.length > 0) throw new FreshetError('CONFIG', `invalid feature spec: ${problems.join('; ')}`);

  const ordered = towerOrder
    ? [...spec.fields.filter((f) => f.tower === 'user'), ...spec.fields.filter((f) => f.tower === 'item')]
    : spec.fields;
  const sparse: SparseField[] = [];
  const numeric: NumericColumn[] = [];
  let slot = 0;
  for (const f of ordered) {
    if (f.kind === 'numeric') {
      if (!f.buckets || f.keepNumeric) numeric.push({ name: f.name, tower: f.tower });
      if (f.buckets) sparse.push({ name: f.name, kind: 'bucket', tower: f.tower, slot: slot++, width: 1 });
      continue;
    }
    const width = f.kind === 'tokens' ? f.maxTokens : 1;
    sparse.push({ name: f.name, kind: f.kind, tower: f.tower, slot, width });
    slot += width;
  }
  if (sparse.length === 0) throw new FreshetError('CONFIG', 'invalid feature spec: no sparse field');
  return { spec, sparse, slots: slot, numeric };
}

/** Reads and validates a feature spec JSON file. */
export function readFeatureSpec(file: string): FeatureSpec {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new FreshetError('CONFIG', `cannot read feature spec ${file}: ${(err as Error).message}`);
  }
  return compileFeatureSpec(json).spec;
}
