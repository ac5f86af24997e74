import { z } from 'zod';
import { errorEnvelopeSchema, featuresSchema } from '@freshet/protocol';

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
  });
  return { score, rank };
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
  items: z.array(z.object({ item: z.string(), score: probability, index: z.number().int().min(0) })),
});
export type RankResponse = z.infer<typeof rankResponseSchema>;

/** Every error reply, HTTP or NATS: `{ error: { code, message, retryable } }`. */
export const errorResponseSchema = z.object({ error: errorEnvelopeSchema });
export type ErrorResponse = z.infer<typeof errorResponseSchema>;
