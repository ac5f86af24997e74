import type { NatsConnection } from 'nats';
import type { Model } from '@freshet/model';
import type { SliceId } from '@freshet/protocol';
import type { ActorLog } from '@freshet/nats';
import { EncoderStatsFollower } from './encoder-stats-follower.js';
import { ModelPinFollower } from './model-pin.js';
import { Replica, type ReplicaEvent } from './replica.js';
import { createScorer, type Scorer } from './scorer.js';

/** How a serving node follows a cluster's model; the live model's and each variant's alike. */
export interface ModelFollowerOptions {
  cluster: string;
  shards: number;
  /** Hold only this slice of the shards (serving option `slice`), other slices' dense tensors read every denseRefreshMs. */
  slice?: (SliceId & { denseRefreshMs: number }) | undefined;
  model: Model;
  replica: {
    emaDecay: number;
    pageSize: number;
    snapshotTimeoutMs: number;
    maxBufferedDeltas: number;
    applyStepMs: number;
  };
  statsWindowMs: number;
  encoderStatsMaxAgeMs: number;
  scorer: 'auto' | 'fast' | 'model';
  fields: { user: string; item: string };
  gemm: 'tfjs' | 'js';
  signal: AbortSignal;
  log: ActorLog;
  onEvent: (e: ReplicaEvent) => void;
}

/**
 * One cluster's model as serving holds it: the replica of its shards (snapshot + deltas), the
 * scorer on it, the encoder statistics its workers publish, and the model pin its guard sets.
 * Started, it subscribes and syncs in the background (`rep.ready` says when it has caught up).
 */
export class ModelFollower {
  private constructor(
    readonly rep: Replica,
    readonly scorer: Scorer,
    readonly pin: ModelPinFollower,
    readonly encoderStats: EncoderStatsFollower | undefined,
  ) {}

  static async start(nc: NatsConnection, o: ModelFollowerOptions): Promise<ModelFollower> {
    const rep = new Replica(nc, {
      cluster: o.cluster,
      shards: o.shards,
      ...(o.slice
        ? { slice: { index: o.slice.index, count: o.slice.count }, denseRefreshMs: o.slice.denseRefreshMs }
        : {}),
      spec: o.model.spec,
      ...o.replica,
      freshnessWindowMs: o.statsWindowMs,
      signal: o.signal,
      onEvent: o.onEvent,
    });
    let encoderStats: EncoderStatsFollower | undefined;
    let pin: ModelPinFollower | undefined;
    try {
      const scorer = await createScorer(o.model, rep, { kind: o.scorer, fields: o.fields, gemm: o.gemm });
      if (o.model.encoder.standardised.length > 0) {
        encoderStats = new EncoderStatsFollower(nc, {
          cluster: o.cluster,
          maxAgeMs: o.encoderStatsMaxAgeMs,
          apply: (stats) => scorer.setEncoderStats(stats),
          log: o.log,
        });
        await encoderStats.start();
      }
      await rep.start();
      pin = new ModelPinFollower(nc, {
        cluster: o.cluster,
        pin: () => rep.pin(),
        unpin: () => rep.unpin(),
        log: o.log,
      });
      await pin.start();
      return new ModelFollower(rep, scorer, pin, encoderStats);
    } catch (e) {
      await pin?.stop();
      await rep.stop();
      await encoderStats?.stop();
      throw e;
    }
  }

  async stop(): Promise<void> {
    await this.pin.stop();
    await this.rep.stop();
    await this.encoderStats?.stop();
  }
}
