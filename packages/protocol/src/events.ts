import { z } from 'zod';

/**
 * Feedback events, schema v1. Publishers in any language send these as JSON (or msgpack) to
 * `freshet.<cluster>.fb.<partition>` with `partition = partitionOf(user, partitions)`; see the
 * @freshet/client README for examples. Validation lives in event-parse.ts.
 */

export const EVENT_SCHEMA_VERSION = 1;
/** Limits that keep one event from costing a worker more than it is worth. */
export const eventLimits = {
  maxBytes: 64 * 1024,
  maxIdLength: 128,
  maxStringLength: 1024,
  maxFeatures: 256,
  maxTokens: 256,
  maxMetaEntries: 32,
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

/**
 * Provenance that is not a model input (dataset name, original timestamp, logging policy).
 * Kept apart from `features` so a replay can carry it without the model learning from it.
 */
export const metaSchema = z
  .record(z.string().min(1).max(64), z.union([z.string().max(256), finite, z.boolean()]))
  .refine(
    (r) => Object.keys(r).length <= eventLimits.maxMetaEntries,
    `at most ${eventLimits.maxMetaEntries} meta entries`,
  );

const base = {
  v: z.literal(1).default(1),
  /** Unique event id: JetStream dedupe and joiner dedupe use it. */
  id,
  /** Event time, ms since the Unix epoch. */
  ts: finite.refine((t) => t > 0, 'must be positive'),
  /** The partition key: one user's events stay in order. */
  user: id,
  meta: metaSchema.optional(),
};

export const impressionEventSchema = z.object({
  ...base,
  kind: z.literal('impression'),
  request: id,
  item: id,
  /** 0-based rank at which the item was shown. */
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
export type ImpressionEvent = z.infer<typeof impressionEventSchema>;
export type ClickEvent = z.infer<typeof clickEventSchema>;
export type ConversionEvent = z.infer<typeof conversionEventSchema>;
export type RatingEvent = z.infer<typeof ratingEventSchema>;
export type DwellEvent = z.infer<typeof dwellEventSchema>;
export type SkipEvent = z.infer<typeof skipEventSchema>;
export type ExampleEvent = z.infer<typeof exampleEventSchema>;
export const eventKinds = feedbackEventSchema.options.map((o) => o.shape.kind.value);
/** The schema of each kind, so a validator parses one object schema instead of a union. */
export const eventSchemaByKind = {
  impression: impressionEventSchema,
  click: clickEventSchema,
  conversion: conversionEventSchema,
  rating: ratingEventSchema,
  dwell: dwellEventSchema,
  skip: skipEventSchema,
  example: exampleEventSchema,
} as const satisfies Record<EventKind, z.ZodType>;

/** Why an event was dead-lettered or dropped. Stable: dashboards and alerts key on these. */
export const deadLetterReasons = [
  'OVERSIZE', // payload over eventLimits.maxBytes, or a string/list over its limit
  'BAD_ENCODING', // neither UTF-8 JSON nor msgpack (or a broken msgpack or zlib body)
  'BAD_JSON', // text that does not parse as a JSON object
  'UNKNOWN_KIND', // `kind` is not one of eventKinds
  'MISSING_FIELD', // a required field (ids, ts, kind...) is absent or empty
  'BAD_TYPE', // a field has the wrong type
  'NON_FINITE', // NaN or ±Infinity anywhere in the event
  'TS_FUTURE', // event time further ahead of the receiver's clock than maxSkewMs
  'TS_PAST', // event time older than maxAgeMs
  'UNSUPPORTED_VERSION', // `v` other than EVENT_SCHEMA_VERSION
  'DUPLICATE', // event id seen before (joiner)
  'RATE_LIMITED', // per-user rate limit exceeded (joiner, click spam)
  'INVALID', // anything else the schema rejects (ranges, enum values)
  'FORBIDDEN_KIND', // an `example` on a feedback subject: labels come only from the labeller role
  'NON_FINITE_GRADIENT', // its example's gradient came back non-finite (worker; never applied)
  'NON_FINITE_STATE', // a shard refused its batch's push: it would make model state non-finite
  'UNKNOWN_DICTIONARY', // compressed with a dictionary the cluster's dictionary bucket does not hold
] as const;
export type DeadLetterReason = (typeof deadLetterReasons)[number];
