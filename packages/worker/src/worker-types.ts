import type { ActorLog } from '@freshet/nats';
import type { Example } from '@freshet/model';
import type { AppliedSeqs } from './applied-seqs.js';
import type { DeliveredMsg } from './delivered-msg.js';
import type { Joiner } from './joiner.js';

// The types the worker's parts share. They live here, importing only leaf modules, so that the
// parts can name them without importing worker.ts or each other (which made import cycles).

/** How a worker's parts write structured log lines: the actors' one logger type. */
export type WorkerLog = ActorLog;

/**
 * A fetched message until it is acked or naked. It is acked when the last thing that needs it
 * goes: its admission, the joiner holding its event, the example it contributed to (until every
 * shard accepted that example's gradient), or its dead letter (until stored).
 */
export interface Tracked {
  msg: DeliveredMsg;
  seq: number;
  part: PartitionState;
  refs: number;
  /** Hand back (nak) instead of ack when the last reference goes. */
  nak: boolean;
  /** Its example was applied: its ack must be confirmed (a lost one would train it again). */
  applied: boolean;
  /** When its ack wait last started (delivery, or the last `working()`), ms. */
  since: number;
}

/** Per leased partition: its joiner and the messages fetched from it and not yet settled. */
export interface PartitionState {
  partition: number;
  joiner: Joiner;
  /** By stream sequence, so a redelivery of a message we still hold is recognised. */
  tracked: Map<number, Tracked>;
  /** Messages whose events the joiner holds (pending impressions, orphan positives), by event id. */
  retained: Map<string, Tracked>;
  /** The last message fetched had nothing behind it (or a fetch came back empty). */
  caughtUp: boolean;
  /** Let go of: its joiner is no longer fed or advanced. */
  closed: boolean;
  /** Resolved when nothing of this partition is held or waits for an ack's confirmation. */
  idle: (() => void)[];
  /** Acks of this partition's applied messages not yet confirmed. */
  confirming: number;
  /** Applied sequences a redelivery of which may still come (acked on arrival, not trained). */
  applied: AppliedSeqs;
}

export interface Buffered {
  partition: number;
  example: Example;
  /** The messages this example came from (1 or 2: an impression and its positive). */
  deps: Tracked[];
  /** Identifies the example by its messages: the batch's push id is a hash of these. */
  key: string;
  /** Produced by the joiner: it cannot be re-derived from a redelivery to this worker. */
  joined: boolean;
  /** Local receive time (batch max-wait). */
  at: number;
}

export interface WorkerCounters {
  acked: number;
  naked: number;
  /** Compressed events handed back while their dictionary was being fetched. */
  dictionaryWaits: number;
  deadLettered: number;
  /** Dead letters that could not be stored (the event was handed back for redelivery). */
  deadLetterFailures: number;
  /** Feedback events the joiner consumed without producing or holding an example (see `joiner.dropped`). */
  ignored: number;
  /** Redeliveries of an event this worker still held (kept once, not fed twice). */
  redelivered: number;
  /** Joined examples put back in the buffer after their batch failed (their events stay held). */
  requeued: number;
  pushes: number;
  pushDuplicates: number;
  staleRounds: number;
  retries: number;
  failedBatches: number;
  nonFiniteBatches: number;
  maxStaleness: number;
  /** Batch manifests stored in KV (one per batch) and puts that failed (the batch was retried). */
  manifestPuts: number;
  manifestFailures: number;
  /** Batches of a previous owner re-formed from their manifests and pushed again under their id. */
  recoveredBatches: number;
  recoveredExamples: number;
  /**
   * Redelivered messages acked at once because their example was already applied (an ack of ours
   * that was lost or not yet confirmed, or a batch recovered from an earlier owner's manifest).
   */
  appliedRedeliveries: number;
  /** `working()` sent for held messages so their ack wait does not run out (see refreshHeld). */
  heldRefreshes: number;
  /** Ack confirmations that failed and were sent again (consumer leader away, timeouts). */
  ackRetries: number;
  /** Acks of applied messages never confirmed (their redelivery is recognised, not trained). */
  acksUnconfirmed: number;
  /** Manifests whose events could no longer be read from the stream (their examples were dropped). */
  manifestsUnrecoverable: number;
  /** Batches formed from several partitions' examples (their manifest stored under each). */
  crossPartitionBatches: number;
}
