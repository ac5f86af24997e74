import type { NatsConnection } from 'nats';
import { z } from 'zod';
import { createModel, type Model, type ModelConfigInput } from '@freshet/model';
import type { Features } from '@freshet/protocol';
import type { Candidate } from './api-schemas.js';
import { LogHistogram } from './histogram.js';
import { ModelFollower, type ModelFollowerOptions } from './model-follower.js';
import type { Replica, ReplicaEvent } from './replica.js';
import type { Scorer } from './scorer.js';

/**
 * A second model served beside the live one (docs/multi-model.md): another Freshet cluster (its
 * own shards, trained by workers that read the live cluster's feedback stream) whose weights this
 * node follows with a second replica.
 */
export const variantSchema = z
  .object({
    /** The variant's cluster: its shards' subjects, its KV bucket (model pin, encoder stats). */
    cluster: z.string(),
    shards: z.number().int().min(1).max(4096).default(1),
    /** Its @freshet/model config (what its shards and workers were given). */
    model: z.record(z.string(), z.unknown()),
    /**
     * `shadow`: scored on every request, compared with what was served, never served.
     * `canary`: serves the users whose hash falls in its `fraction` (the same users every time).
     */
    mode: z.enum(['shadow', 'canary']),
    /** Canary only: the share of users it serves, in [0, 1]. */
    fraction: z.number().min(0).max(1).default(0),
  })
  .strict();
export type VariantOptions = z.infer<typeof variantSchema>;

/** What a serving node's status says of one variant. */
export interface VariantStatus {
  cluster: string;
  mode: 'shadow' | 'canary';
  fraction: number;
  model: string;
  ready: boolean;
  version: number;
  /** Canary: requests it answered. Shadow: always 0. */
  served: number;
  /** Canary: requests of its users answered by the live model because it was not ready. */
  fallbacks: number;
  /** Shadow: requests scored by it beside the served model, and what they showed. */
  shadow: {
    compared: number;
    /** Requests it could not score (not ready yet, or its scorer threw). */
    skipped: number;
    /** Requests whose best candidate was the same for both models (of those with ≥ 2 candidates). */
    top1Agreement: number | null;
    /** |served score − its score| per candidate. */
    absDiff: { mean: number; p50: number; p99: number; max: number; count: number };
  };
}

/** Settings a variant shares with its serving node. */
export type VariantContext = Omit<ModelFollowerOptions, 'cluster' | 'shards' | 'model' | 'onEvent'> & {
  nc: NatsConnection;
};

/** One variant's replica, scorer and counters. */
export class Variant {
  model: Model | undefined;
  rep: Replica | undefined;
  scorer: Scorer | undefined;
  private followed: ModelFollower | undefined;
  private served = 0;
  private fallbacks = 0;
  private compared = 0;
  private skipped = 0;
  private top1Compared = 0;
  private top1Same = 0;
  // probabilities differ by at most 1: 1e-6 · 2^20 ≈ 1 covers it
  private readonly absDiff = new LogHistogram(1e-6, 20);

  constructor(
    readonly o: VariantOptions,
    private readonly ctx: VariantContext,
  ) {}

  get ready(): boolean {
    return !!this.rep?.ready && !!this.scorer;
  }

  /** Subscribes and starts syncing; does not wait for the snapshot (`ready` says when). */
  async start(): Promise<void> {
    const { ctx, o } = this;
    this.model = createModel(o.model as ModelConfigInput);
    const log = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) =>
      ctx.log(level, msg, { variant: o.cluster, ...fields });
    const f = await ModelFollower.start(ctx.nc, {
      cluster: o.cluster,
      shards: o.shards,
      model: this.model,
      ...ctx,
      log,
      onEvent: (e: ReplicaEvent) => {
        if (e.kind === 'synced') log('info', 'variant shard synced', { ...e });
        else if (e.kind === 'resync') log('warn', 'variant shard resync', { ...e });
        else log('warn', e.kind, { shard: e.shard, code: e.error.code, error: e.error.message });
      },
    });
    // the variant's own guard pins the variant (a degraded canary stops moving, as the live one would)
    this.followed = f;
    this.rep = f.rep;
    this.scorer = f.scorer;
  }

  async stop(): Promise<void> {
    await this.followed?.stop();
  }

  /** Canary: scores a request of one of its users. */
  score(user: string, context: Features | undefined, candidates: readonly Candidate[]): Float32Array {
    const s = this.scorer!.score(user, context, candidates);
    this.served++;
    return s;
  }

  /** Canary: one of its users was answered by the live model (not ready). */
  fellBack(): void {
    this.fallbacks++;
  }

  /** Shadow: scores the request too and records how it differs from the served scores. */
  shadow(
    user: string,
    context: Features | undefined,
    candidates: readonly Candidate[],
    served: Float32Array,
  ): void {
    if (!this.ready) {
      this.skipped++;
      return;
    }
    let mine: Float32Array;
    try {
      mine = this.scorer!.score(user, context, candidates);
    } catch {
      // a shadow never fails the request it watches
      this.skipped++;
      return;
    }
    this.compared++;
    let bestA = 0;
    let bestB = 0;
    for (let i = 0; i < served.length; i++) {
      const d = Math.abs(served[i]! - mine[i]!);
      if (Number.isFinite(d)) this.absDiff.record(d);
      if (served[i]! > served[bestA]!) bestA = i;
      if (mine[i]! > mine[bestB]!) bestB = i;
    }
    if (served.length >= 2) {
      this.top1Compared++;
      if (bestA === bestB) this.top1Same++;
    }
  }

  status(): VariantStatus {
    const h = this.absDiff;
    return {
      cluster: this.o.cluster,
      mode: this.o.mode,
      fraction: this.o.mode === 'canary' ? this.o.fraction : 0,
      model: this.model?.spec.name ?? '',
      ready: this.ready,
      version: this.rep?.version() ?? 0,
      served: this.served,
      fallbacks: this.fallbacks,
      shadow: {
        compared: this.compared,
        skipped: this.skipped,
        top1Agreement: this.top1Compared > 0 ? this.top1Same / this.top1Compared : null,
        absDiff: {
          mean: h.count > 0 ? h.sum / h.count : 0,
          p50: h.quantile(0.5),
          p99: h.quantile(0.99),
          max: h.max,
          count: h.count,
        },
      },
    };
  }
}
