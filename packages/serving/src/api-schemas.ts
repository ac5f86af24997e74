import { z } from 'zod';
import { errorEnvelopeSchema, eventLimits, featuresSchema } from '@freshet/protocol';
import { explorationSchema } from './exploration.js';

const id = z.string().min(1).max(128);

/** Request and response schemas of the score and rank APIs, built once per node's limits. */
export function apiSchemas(limits: { maxCandidates: number }) {
  const candidate = z
    .object({
      item: id,
      /** Item features known at request time; they override context features of the same name. */
      features: featuresSchema.optional(),
    })
    .strict();
  const score = z
    .object({
      user: id,
      /** Request context (device, query, time of day...), shared by every candidate. */
      context: featuresSchema.optional(),
      candidates: z
        .array(candidate)
        .min(1, 'at least one candidate')
        .max(limits.maxCandidates, `at most ${limits.maxCandidates} candidates`),
      /** Echoed back, for client-side correlation. */
      requestId: z.string().max(128).optional(),
    })
    .strict();
  const rank = score.extend({
    /** How many of the best candidates to return (default: the node's `limits.defaultK`). */
    k: z.number().int().min(1).max(limits.maxCandidates).optional(),
    /** Exploration over the ranked list (default: the node's `exploration`); see exploration.ts. */
    explore: explorationSchema.optional(),
  });
  return { score, rank };
}
/**
 * A hand-written check of score/rank requests that runs ~10× faster than the zod schemas of
 * {@link apiSchemas} on a 100-candidate request. It is conservative: it accepts only what the zod
 * schema accepts (fuzz-tested against it), and anything it does not accept goes through zod, which
 * decides and words the reason. So zod stays the definition; this is the fast path for the
 * common, valid request. Accepted requests are used as they are (no copy is made).
 */
export function fastRequestCheck(limits: { maxCandidates: number }) {
  const max = limits.maxCandidates;
  return (raw: unknown, op: 'score' | 'rank'): boolean => {
    if (!isPlain(raw)) return false;
    let needed = 2;
    for (const key in raw) {
      const v = raw[key];
      switch (key) {
        case 'user':
          if (!isId(v)) return false;
          needed--;
          break;
        case 'candidates':
          if (!candidatesOk(v, max)) return false;
          needed--;
          break;
        case 'context':
          if (v !== undefined && !featuresOk(v)) return false;
          break;
        case 'requestId':
          if (v !== undefined && !(typeof v === 'string' && v.length <= 128)) return false;
          break;
        case 'k':
          if (op !== 'rank') return false;
          if (v !== undefined && !(Number.isInteger(v) && (v as number) >= 1 && (v as number) <= max))
            return false;
          break;
        default:
          return false;
      }
    }
    return needed === 0;
  };
}

/** A JSON-like plain object without a `__proto__` own key (zod drops such a key; we'd keep it). */
function isPlain(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return (proto === Object.prototype || proto === null) && !Object.hasOwn(v, '__proto__');
}

function isId(v: unknown): boolean {
  return typeof v === 'string' && v.length >= 1 && v.length <= 128;
}

function candidatesOk(v: unknown, max: number): boolean {
  if (!Array.isArray(v) || v.length < 1 || v.length > max) return false;
  for (let i = 0; i < v.length; i++) {
    const c: unknown = v[i];
    if (!isPlain(c)) return false;
    let hasItem = false;
    for (const key in c) {
      if (key === 'item') {
        if (!isId(c.item)) return false;
        hasItem = true;
      } else if (key === 'features') {
        if (c.features !== undefined && !featuresOk(c.features)) return false;
      } else return false;
    }
    if (!hasItem) return false;
  }
  return true;
}

function featuresOk(v: unknown): boolean {
  if (!isPlain(v)) return false;
  let n = 0;
  for (const key in v) {
    if (++n > eventLimits.maxFeatures || key.length < 1 || key.length > 128) return false;
    const x = v[key];
    if (typeof x === 'string') {
      if (x.length > eventLimits.maxStringLength) return false;
    } else if (typeof x === 'number') {
      if (!Number.isFinite(x)) return false;
    } else if (Array.isArray(x)) {
      if (x.length > eventLimits.maxTokens) return false;
      for (let i = 0; i < x.length; i++) {
        const t: unknown = x[i];
        if (typeof t !== 'string' || t.length > eventLimits.maxStringLength) return false;
      }
    } else return false;
  }
  return true;
}

export type ScoreRequest = z.infer<ReturnType<typeof apiSchemas>['score']>;
export type RankRequest = z.infer<ReturnType<typeof apiSchemas>['rank']>;
export type Candidate = ScoreRequest['candidates'][number];

const probability = z.number().min(0).max(1);
const meta = {
  /** The model's name. */
  model: z.string(),
  /** Sum of the shard versions the scores were computed with: grows with every applied update. */
  version: z.number().int().min(0),
  /** Per-shard versions. */
  versions: z.array(z.number().int().min(0)),
  /** Age (ms) of the newest update this node holds; null before any delta since its start. */
  freshestAgeMs: z.number().min(0).nullable(),
  /** The node that answered. */
  node: z.string(),
  /**
   * The cluster whose model computed the scores: the node's own, or a canary's
   * (docs/multi-model.md). Put it on the impressions as `meta.servedBy` for served CTR per model.
   */
  servedBy: z.string().optional(),
  requestId: z.string().optional(),
};

export const scoreResponseSchema = z.object({
  ...meta,
  /** One probability per candidate, in request order. */
  scores: z.array(probability),
});
export type ScoreResponse = z.infer<typeof scoreResponseSchema>;

export const rankResponseSchema = z.object({
  ...meta,
  /** The best `k` candidates, highest score first; `index` is the position in the request. */
  items: z.array(
    z.object({
      item: z.string(),
      score: probability,
      index: z.number().int().min(0),
      /** Under exploration: the probability its slot showed it (send it back on the impression). */
      propensity: probability.optional(),
      /** Under exploration: shown instead of the best remaining candidate. */
      explored: z.boolean().optional(),
    }),
  ),
});
export type RankResponse = z.infer<typeof rankResponseSchema>;

/** Every error reply, HTTP or NATS: `{ error: { code, message, retryable } }`. */
export const errorResponseSchema = z.object({ error: errorEnvelopeSchema });
export type ErrorResponse = z.infer<typeof errorResponseSchema>;
