import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { natsOptionsSchema } from '@freshet/nats';
import { assertClusterName, FreshetError } from '@freshet/protocol';
import { explorationSchema } from './exploration.js';
import { variantSchema } from './variants.js';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/**
 * Options of a serving node (what `--options-json` carries). `model` is a @freshet/model config
 * (the cluster's model); the node derives the table spec from it exactly as shards and workers do.
 */
export const servingOptionsSchema = z
  .object({
    cluster: z.string().default('local'),
    /** Unique per node; shows in the NATS service registry. */
    id: z.string().min(1).max(128).optional(),
    nats: natsOptionsSchema.prefault({}),
    /** Shard count of the cluster (the shard map). */
    shards: z.number().int().min(1).max(4096).default(1),
    /**
     * Hold a slice of the model (packages/serving/README.md "Sliced serving"): the shards s with
     * s % count = index, and every dense tensor. A request is scored here with the other slices'
     * rows asked of the nodes holding them (one request per slice). Unset: the whole model.
     */
    slice: z
      .object({
        index: z.number().int().min(0),
        count: z.number().int().min(1).max(4096),
        /**
         * How long another slice has to answer a rows request before the score fails (503); half
         * for a first try, half for a second one when the holder that got it timed out, was busy
         * or was stopping (the queue group may pick another).
         */
        timeoutMs: z.number().int().min(1).max(60_000).default(1000),
        /**
         * The MLP's tensors owned by other slices' shards are read again this often (ms): the
         * staleness they may add to this node's scores, against one tensor read per period.
         */
        denseRefreshMs: z.number().int().min(10).max(60_000).default(200),
      })
      .strict()
      .optional(),
    model: z.record(z.string(), z.unknown()),
    http: z
      .object({
        enabled: z.boolean().default(true),
        /** Loopback by default: a non-loopback host also needs `expose: true`. */
        host: z.string().default('127.0.0.1'),
        /** 0 picks a free port (reported by `ServingNode.httpUrl`). */
        port: z.number().int().min(0).max(65535).default(0),
        expose: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        maxCandidates: z.number().int().min(1).max(100_000).default(1000),
        /** Request bodies above this get a 400 (HTTP) or an OVERSIZE error reply (NATS). */
        maxBodyBytes: z
          .number()
          .int()
          .min(256)
          .max(64 * 1024 * 1024)
          .default(1024 * 1024),
        /** `k` of a rank request when it names none. */
        defaultK: z.number().int().min(1).default(10),
      })
      .strict()
      .prefault({}),
    /** Which raw feature names carry the request's user and each candidate's item. */
    fields: z
      .object({ user: z.string().default('user'), item: z.string().default('item') })
      .strict()
      .prefault({}),
    /**
     * `auto`: the hand-written Float32Array forward pass where the model kind has one, else the
     * model's own predict; `fast` requires the former; `model` always uses @freshet/model.
     */
    scorer: z.enum(['auto', 'fast', 'model']).default('auto'),
    /** Exploration of rank requests that name none (`explore`); see exploration.ts. */
    exploration: explorationSchema.default({ kind: 'none' }),
    /** The fast path's per-candidate matrix products: tfjs (wasm SIMD) or plain JS loops. */
    gemm: z.enum(['tfjs', 'js']).default('tfjs'),
    replica: z
      .object({
        /** 0 serves the latest weights; in (0,1) an exponential moving average per row write. */
        emaDecay: z.number().min(0).lt(1).default(0),
        pageSize: z
          .number()
          .int()
          .min(1)
          .max(1 << 16)
          .default(8192),
        snapshotTimeoutMs: z.number().int().min(1).default(5000),
        maxBufferedDeltas: z.number().int().min(1).default(10_000),
        /** Longest stretch (ms) of delta application before requests get the event loop back. */
        applyStepMs: z.number().min(0).max(1000).default(1),
      })
      .strict()
      .prefault({}),
    /** Window of the freshness and latency quantiles in status replies. */
    statsWindowMs: z.number().int().min(1000).default(60_000),
    /**
     * Workers' records of standardised-column statistics older than this are left out of the
     * merge serving scales requests with (a worker gone for good; live ones rewrite every ~2 s).
     */
    encoderStatsMaxAgeMs: z
      .number()
      .int()
      .min(1000)
      .default(7 * 24 * 3600_000),
    /**
     * Check every response before sending it: a hand check of what can go wrong (probabilities in
     * [0, 1], whole-number versions; a few µs), with the zod schema judging any response it doubts.
     */
    validateResponses: z.boolean().default(true),
    /**
     * Other models (other clusters) this node follows beside the live one: scored in the shadow
     * of every request, or serving a fixed share of users (docs/multi-model.md).
     */
    variants: z.array(variantSchema).max(8).default([]),
  })
  .strict()
  .superRefine((o, ctx) => {
    if (!o.slice) return;
    const issue = (message: string, path: (string | number)[]) =>
      ctx.addIssue({ code: 'custom', message, path });
    if (o.slice.count > o.shards)
      issue(`slice.count ${o.slice.count} is more than the ${o.shards} shards`, ['slice', 'count']);
    if (o.slice.index >= o.slice.count)
      issue(`slice.index ${o.slice.index} must be below slice.count ${o.slice.count}`, ['slice', 'index']);
    // variants replicate other clusters whole; a sliced node would hold them whole beside its slice
    if (o.variants.length > 0) issue('a sliced node follows no variants', ['variants']);
  });

export type ServingOptionsInput = z.input<typeof servingOptionsSchema>;
/** Compiled options: defaults applied, id filled in, exposure checked. */
export type ServingOptions = z.infer<typeof servingOptionsSchema> & { id: string };

/** Validates serving options once; throws a CONFIG FreshetError naming every problem. */
export function compileServingOptions(input: unknown): ServingOptions {
  const r = servingOptionsSchema.safeParse(input);
  if (!r.success) throw new FreshetError('CONFIG', `invalid serving options: ${z.prettifyError(r.error)}`);
  const o = r.data;
  assertClusterName(o.cluster);
  if (o.http.enabled && !LOOPBACK.has(o.http.host) && !o.http.expose) {
    throw new FreshetError(
      'CONFIG',
      `http.host ${o.http.host} is not loopback: set http.expose: true to serve beyond this machine`,
    );
  }
  const seen = new Set([o.cluster]);
  for (const v of o.variants) {
    assertClusterName(v.cluster);
    if (seen.has(v.cluster))
      throw new FreshetError('CONFIG', `variant cluster ${v.cluster} is the live cluster or listed twice`);
    seen.add(v.cluster);
  }
  const canary = o.variants.reduce((a, v) => a + (v.mode === 'canary' ? v.fraction : 0), 0);
  if (canary > 1 + 1e-9) throw new FreshetError('CONFIG', `canary fractions add up to ${canary}: at most 1`);
  return { ...o, id: o.id ?? `serving-${randomUUID().slice(0, 8)}` };
}
