import type { ActorState } from '@freshet/nats';
import type { HostPartKind, ShardStatus } from '@freshet/protocol';
import type { ShardOptions } from './shard-options.js';
import type { HandOffs, RoutedReply } from './part-calls.js';

/**
 * A shard as its shard host drives it, whether it runs on the host's own thread (a Shard) or in
 * one of the host's shard threads (shard-threads.ts, host option `threads`).
 */
export interface HostedShard {
  readonly options: ShardOptions;
  readonly id: string;
  readonly cluster: string;
  readonly state: ActorState;
  /** What start() recovered (undefined before it finished). */
  readonly restore: RestoreInfo | undefined;
  /** Stopped with everything it applied in the Object Store. */
  readonly handedOff: boolean;
  /** stop() wrote a checkpoint of everything applied (its upload may still be missing). */
  readonly finalCheckpointWritten: boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
  /**
   * Status; a threaded shard's is at most a status interval old (every call that changes it,
   * start, stop, checkpoint and restore, refreshes it).
   */
  status(): ShardStatus;
  /**
   * The reply to one part of a host message (host-messages.ts): the shard's reply frame, an
   * error envelope for what its handler threw, or undefined while it serves none (starting,
   * stopped). Never rejects. A shard of another thread joins its thread's group in `handOffs`.
   */
  hostCall(kind: HostPartKind, frame: Uint8Array, handOffs?: HandOffs): RoutedReply;
  /** After stop(): puts the final checkpoint in the Object Store, so the lease may go. */
  finishHandOff(): Promise<void>;
  checkpoint(): Promise<void>;
  reload(checkpoint?: string): Promise<RestoreInfo & { versionBefore: number }>;
  forgetUser(user: string, fields?: readonly string[]): Promise<Record<string, number>>;
}

/** What the shard recovered on start. */
export interface RestoreInfo {
  checkpointSegment: number | null;
  /** Where the checkpoint came from: the data dir, or the Object Store (a fresh data dir). */
  checkpointSource: 'dir' | 'object-store' | null;
  checkpointVersion: number;
  /** Time spent fetching and verifying it from the Object Store (0 when from the data dir). */
  fetchMs: number;
  replayedRecords: number;
  replayedSegments: number;
  /**
   * Logged pushes skipped because they left state non-finite (NON_FINITE_STATE). This version
   * never logs such a push; a log written before the after-apply check existed may hold one.
   */
  rejectedRecords: number;
  version: number;
  ms: number;
}
