import type { MessagePort } from 'node:worker_threads';
import type { LogLevel, NatsOptionsInput } from '@freshet/nats';
import type { ErrorEnvelope, ShardStatus } from '@freshet/protocol';
import type { PackedFrames } from './port-batch.js';
import type { ShardOptionsInput } from './shard-options.js';

/** What a shard thread is started with (shard-thread.ts). */
export interface ThreadData {
  cluster: string;
  host: string;
  thread: number;
  nats: NatsOptionsInput;
  /** Its shards publish their deltas through the host's host deltas (thread-deltas.ts). */
  hostDeltas: boolean;
  /** How often it reports its shards' statuses. */
  statusMs: number;
  /**
   * It answers host messages too, in the host's queue group (host-messages.ts), handing the parts
   * for its peers' shards to them (thread-peers.ts); unset: only the host's thread answers them.
   */
  endpoints?: { maxInFlight: number } | undefined;
}

/**
 * The host's thread to a shard thread. `sid` names one hosted shard's run (a shard started again
 * here is a new sid), so a late command cannot reach its successor.
 */
export type ToThread =
  /** Parts of host messages: tag = the shard's sid × 2 + (push ? 1 : 0) (port-batch.ts). */
  | { op: 'calls'; parts: PackedFrames }
  | { op: 'init'; id: number }
  | { op: 'start'; id: number; sid: number; options: ShardOptionsInput }
  | { op: 'stop' | 'finish' | 'checkpoint'; id: number; sid: number }
  | { op: 'reload'; id: number; sid: number; checkpoint?: string }
  | { op: 'forget'; id: number; sid: number; user: string; fields?: readonly string[] }
  | { op: 'close'; id: number }
  /** The port to shard thread `thread` (thread-peers.ts). */
  | { op: 'peer'; thread: number; port: MessagePort }
  /** Which thread runs which shard: [shard, thread] (thread −1: none of them). */
  | { op: 'routes'; id: number; set: [number, number][] }
  /** The host's host-delta tick of these shards (replied: ticked). */
  | { op: 'tick'; id: number; shards: number[] }
  /** The host's host deltas no longer tick the shard of deltas-detach `id`. */
  | { op: 'detached'; id: number };

/** A command to a shard thread, as its host's thread sends it (the id is added on the way). */
export type Command = ToThread extends infer T ? (T extends { id: number } ? Omit<T, 'id'> : never) : never;

/** A shard's state as the host's thread mirrors it. */
export interface StoppedShard {
  status: ShardStatus;
  handedOff: boolean;
  finalCheckpointWritten: boolean;
}

/** A shard thread to the host's thread. */
export type ToMain =
  /** Their replies, by call id (tag 0; length −1: the shard serves none). */
  | { t: 'replies'; parts: PackedFrames }
  | { t: 'done'; id: number; value?: unknown; error?: ErrorEnvelope }
  | { t: 'log'; sid: number; level: LogLevel; msg: string; fields?: Record<string, unknown> }
  /** Its shards, and the host messages its endpoints answered so far (`endpoints`). */
  | { t: 'status'; list: ({ sid: number } & StoppedShard)[]; hostMessages: number }
  | { t: 'deltas-attach'; shard: number; intervalMs: number }
  | { t: 'deltas-detach'; id: number; shard: number }
  /** A delta published outside a tick, for the host to put on the bus. */
  | { t: 'delta'; shard: number; frame: Uint8Array }
  /** The frames a tick published (packed: id = the shard). */
  | { t: 'ticked'; id: number; parts: PackedFrames };
