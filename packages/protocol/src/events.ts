import { z } from 'zod';

/**
 * Feedback events, schema v1. Publishers in any language send these as JSON (or msgpack) to
 * `freshet.<cluster>.fb.<partition>`; see the README for examples.
 */

export const EVENT_SCHEMA_VERSION = 1;
/** Limits that keep one event from costing a worker more than it is worth. */
export const eventLimits = {
  maxBytes: 64 * 1024,
  maxIdLength: 128,
  maxStringLength: 1024,
  maxFeatures: 256,
  maxTokens: 256,
} as const;

const id = z.string().min(1).max(eventLimits.maxIdLength);
const finite = z.number().refine(Number.isFinite, 'must be a finite number');
const featureValue = z.union([
  z.string().max(eventLimits.maxStringLength),
  finite,
  z.array(z.string().max(eventLimits.maxStringLength)).max(eventLimits.maxTokens),
]);
/** Raw features: strings are categorical, numbers numeric, string arrays token lists. */
export const featuresSchema = z
  .record(z.string().min(1).max(128), featureValue)
  .refine(
    (r) => Object.keys(r).length <= eventLimits.maxFeatures,
    `at most ${eventLimits.maxFeatures} features`,
  );
export type Features = z.infer<typeof featuresSchema>;

const base = {
  v: z.literal(1).default(1),
  /** Unique event id: JetStream dedupe and joiner dedupe use it. */
  id,
  /** Event time, ms since the Unix epoch. */
  ts: finite.refine((t) => t > 0, 'must be positive'),
  user: id,
};

export const impressionEventSchema = z.object({
  ...base,
  kind: z.literal('impression'),
  request: id,
  item: id,
  position: z.number().int().min(0).max(100_000).optional(),
  query: z.string().max(eventLimits.maxStringLength).optional(),
  /** Request context and item features known at impression time. */
  features: featuresSchema.default({}),
  /** Logging propensity (e.g. Open Bandit), kept for off-policy evaluation. */
  propensity: finite.min(0).max(1).optional(),
});
export const clickEventSchema = z.object({ ...base, kind: z.literal('click'), request: id, item: id });
export const conversionEventSchema = z.object({
  ...base,
  kind: z.literal('conversion'),
  request: id,
  item: id,
  value: finite.optional(),
});
export const ratingEventSchema = z.object({
  ...base,
  kind: z.literal('rating'),
  item: id,
  request: id.optional(),
  rating: finite.min(0).max(10),
  features: featuresSchema.default({}),
});
export const dwellEventSchema = z.object({
  ...base,
  kind: z.literal('dwell'),
  request: id,
  item: id,
  ms: finite.min(0).max(7 * 24 * 3600 * 1000),
});
export const skipEventSchema = z.object({ ...base, kind: z.literal('skip'), request: id, item: id });
/** A pre-labelled example (dataset replays, offline logs): no join needed. */
export const exampleEventSchema = z.object({
  ...base,
  kind: z.literal('example'),
  item: id.optional(),
  label: finite.min(0).max(1),
  weight: finite.min(0).max(1000).default(1),
  features: featuresSchema,
});

export const feedbackEventSchema = z.discriminatedUnion('kind', [
  impressionEventSchema,
  clickEventSchema,
  conversionEventSchema,
  ratingEventSchema,
  dwellEventSchema,
  skipEventSchema,
  exampleEventSchema,
]);
export type FeedbackEvent = z.infer<typeof feedbackEventSchema>;
export type FeedbackEventInput = z.input<typeof feedbackEventSchema>;
export type EventKind = FeedbackEvent['kind'];
export const eventKinds = feedbackEventSchema.options.map((o) => o.shape.kind.value);

/** Why an event was dead-lettered. Stable: dashboards and alerts key on these. */
export const deadLetterReasons = [
  'OVERSIZE',
  'BAD_ENCODING',
  'BAD_JSON',
  'UNKNOWN_KIND',
  'MISSING_FIELD',
  'BAD_TYPE',
  'NON_FINITE',
  'TS_FUTURE',
  'TS_PAST',
  'UNSUPPORTED_VERSION',
  'DUPLICATE',
  'RATE_LIMITED',
  'INVALID',
] as const;
export type DeadLetterReason = (typeof deadLetterReasons)[number];
