import type { LogLevel, NatsOptionsInput } from '@freshet/nats';
import type { ErrorEnvelope, HostPartKind, ShardStatus } from '@freshet/protocol';
import type { ShardOptionsInput } from './shard-options.js';

/** What a shard thread is started with (shard-thread.ts). */
export interface ThreadData {
  cluster: string;
  host: string;
  thread: number;
  nats: NatsOptionsInput;
  /** Its shards' host deltas' size bound; null: each shard publishes its own (no `hostDeltas`). */
  hostDeltasMaxBytes: number | null;
  /** How often it reports its shards' statuses. */
  statusMs: number;
}

/**
 * The host's thread to a shard thread. `sid` names one hosted shard's run (a shard started again
 * here is a new sid), so a late command cannot reach its successor.
 */
export type ToThread =
  | { op: 'calls'; list: PartCall[] }
  | { op: 'init'; id: number }
  | { op: 'start'; id: number; sid: number; options: ShardOptionsInput }
  | { op: 'stop' | 'finish' | 'checkpoint'; id: number; sid: number }
  | { op: 'reload'; id: number; sid: number; checkpoint?: string }
  | { op: 'forget'; id: number; sid: number; user: string; fields?: readonly string[] }
  | { op: 'close'; id: number };

/** A shard's state as the host's thread mirrors it. */
export interface StoppedShard {
  status: ShardStatus;
  handedOff: boolean;
  finalCheckpointWritten: boolean;
}

/**
 * One part of a host message for one shard. Parts go over in batches, one post per event-loop
 * turn each way, not one per part: a post costs the host's thread about as much as a NATS
 * message (docs/performance.md), and under load a turn carries many.
 */
export interface PartCall {
  id: number;
  sid: number;
  kind: HostPartKind;
  frame: Uint8Array;
}

/** A shard's reply to a part: its frame, or undefined while it serves none. */
export interface PartReply {
  id: number;
  frame: Uint8Array | undefined;
}

/** A shard thread to the host's thread. */
export type ToMain =
  | { t: 'replies'; list: PartReply[] }
  | { t: 'done'; id: number; value?: unknown; error?: ErrorEnvelope }
  | { t: 'log'; sid: number; level: LogLevel; msg: string; fields?: Record<string, unknown> }
  | { t: 'status'; list: ({ sid: number } & StoppedShard)[] };
