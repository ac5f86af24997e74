import type { JetStreamClient, NatsConnection } from 'nats';
import {
  compressEvent,
  encodeEvent,
  feedbackEventSchema,
  FreshetError,
  partitionOf,
  subjects,
  validEvent,
  type FeedbackEventInput,
  type Subjects,
} from '@freshet/protocol';
import { fromNatsError, Lifecycle, putEventDictionary, type ActorLog, type ActorState } from '@freshet/nats';
import {
  compilePublisherOptions,
  type PublisherOptions,
  type PublisherOptionsInput,
} from './publisher-options.js';

/** Actor states, as in every Freshet actor (running once constructed). */
export type PublisherState = ActorState;

/** Monotonic counters of a publisher. */
export interface PublisherStats {
  /** Accepted by `publish` (buffered). */
  buffered: number;
  /** Acked by JetStream as new messages. */
  acked: number;
  /** Acked as duplicates of an id already in the stream's dedupe window. */
  duplicates: number;
  retries: number;
  /** Given up after maxRetries; reported to `onError`. */
  failed: number;
}

interface Pending {
  subject: string;
  id: string;
  data: Uint8Array;
  attempts: number;
}

/**
 * Publishes feedback events to the cluster's JetStream stream, routed by user to a partition.
 *
 * `publish` encodes and buffers an event and returns once it is buffered; a pump keeps up to
 * `maxInFlight` publishes awaiting acks (their writes coalesce into few socket writes), so one
 * slow ack never stalls the rest. The event id is the JetStream message id, so retries after a
 * lost ack, and publishers that resend, are deduplicated by the server. Memory is bounded by
 * `maxBuffered` + `maxInFlight` events. `flush()` resolves once everything buffered is acked.
 */
export class Publisher {
  readonly options: PublisherOptions;
  private readonly js: JetStreamClient;
  private readonly s: Subjects;
  private readonly life: Lifecycle;
  private queue: Pending[] = [];
  private head = 0;
  private inFlight = 0;
  private readonly spaceWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  private readonly counters: PublisherStats = { buffered: 0, acked: 0, duplicates: 0, retries: 0, failed: 0 };
  private readonly onError: ((err: FreshetError, eventId: string) => void) | undefined;
  private readonly signal: AbortSignal | undefined;
  /**
   * Nothing is sent before the dictionary is stored (a worker would have to wait for it); a
   * dictionary that cannot be stored fails the publisher (`dictionaryError`).
   */
  private dictionaryStored: boolean;
  private dictionaryError: FreshetError | undefined;

  constructor(
    nc: NatsConnection,
    options: PublisherOptionsInput,
    extra: {
      signal?: AbortSignal;
      onError?: (err: FreshetError, eventId: string) => void;
      /** Its state transitions; silent by default. */
      log?: ActorLog;
    } = {},
  ) {
    this.options = compilePublisherOptions(options);
    this.js = nc.jetstream({ timeout: this.options.ackTimeoutMs });
    this.s = subjects(this.options.cluster);
    this.onError = extra.onError;
    this.signal = extra.signal;
    this.life = new Lifecycle(
      { start: () => Promise.resolve(), stop: () => this.drain() },
      { name: `publisher-${this.options.cluster}`, log: extra.log, signal: extra.signal },
    );
    this.life.runningNow();
    const dictionary = this.options.compression?.dictionary;
    this.dictionaryStored = dictionary === undefined;
    if (dictionary) {
      putEventDictionary(nc, this.options.cluster, dictionary).then(
        () => {
          this.dictionaryStored = true;
          this.pump();
        },
        (err: unknown) => {
          this.dictionaryError = err instanceof FreshetError ? err : fromNatsError(err, this.s.dictBucket);
          this.failBuffered();
        },
      );
    }
  }

  /** Why the publisher cannot send (its dictionary could not be stored), if so. */
  get failure(): FreshetError | undefined {
    return this.dictionaryError;
  }

  get state(): PublisherState {
    return this.life.state;
  }
  /** Events buffered, not yet sent. */
  get buffered(): number {
    return this.queue.length - this.head;
  }
  get pendingAcks(): number {
    return this.inFlight;
  }
  stats(): PublisherStats {
    return { ...this.counters };
  }

  /**
   * Buffers one event for publishing. Waits while the buffer is full (`whenFull: 'wait'`) or
   * throws OVERLOADED (`'reject'`). Throws BAD_EVENT for an invalid event, SHUTTING_DOWN after close.
   */
  async publish(event: FeedbackEventInput): Promise<void> {
    const p = this.prepare(event);
    while (this.buffered >= this.options.maxBuffered) {
      if (this.options.whenFull === 'reject') {
        throw new FreshetError('OVERLOADED', `publisher buffer full (${this.options.maxBuffered} events)`);
      }
      await new Promise<void>((r) => this.spaceWaiters.push(r));
      this.assertOpen();
    }
    this.enqueue(p);
  }

  /** Like {@link publish} without waiting: false when the buffer is full. */
  tryPublish(event: FeedbackEventInput): boolean {
    const p = this.prepare(event);
    if (this.buffered >= this.options.maxBuffered) return false;
    this.enqueue(p);
    return true;
  }

  /** Resolves once every event buffered so far is acked (or has failed for good). */
  async flush(): Promise<PublisherStats> {
    if (this.buffered > 0 || this.inFlight > 0) {
      await new Promise<void>((r) => this.idleWaiters.push(r));
    }
    return this.stats();
  }

  /**
   * Stops taking events, publishes what is buffered, and waits for the acks: one stop shared by
   * every caller (and the signal).
   */
  stop(): Promise<void> {
    return this.life.stop();
  }

  /** {@link stop}, then the final counters. */
  async close(): Promise<PublisherStats> {
    await this.stop();
    return this.stats();
  }

  private async drain(): Promise<void> {
    for (const w of this.spaceWaiters.splice(0)) w();
    await this.flush();
  }

  private assertOpen(): void {
    if (this.dictionaryError) throw this.dictionaryError;
    if (this.life.state !== 'running' || this.signal?.aborted) {
      throw new FreshetError('SHUTTING_DOWN', 'publisher is closed');
    }
  }

  private prepare(event: FeedbackEventInput): Pending {
    this.assertOpen();
    let e = event;
    if (this.options.validate) {
      // the fast path vouches for the common valid event; zod decides (and words) the rest
      const fast = validEvent(event);
      if (fast) e = fast;
      else {
        const r = feedbackEventSchema.safeParse(event);
        if (!r.success) {
          const i = r.error.issues[0];
          throw new FreshetError('BAD_EVENT', `${i?.path.join('.') || 'event'}: ${i?.message}`);
        }
        e = r.data;
      }
    }
    return {
      // labelled examples go to the labels subjects (the labeller role's); workers dead-letter
      // an example that arrives on a feedback subject
      subject: (e.kind === 'example' ? this.s.labels : this.s.feedback)(
        partitionOf(e.user, this.options.partitions),
      ),
      id: e.id,
      data: this.options.compression
        ? compressEvent(encodeEvent(e, this.options.encoding), this.options.compression)
        : encodeEvent(e, this.options.encoding),
      attempts: 0,
    };
  }

  private enqueue(p: Pending): void {
    this.queue.push(p);
    this.counters.buffered++;
    this.pump();
  }

  /** Every buffered event fails with the dictionary's error (reported to `onError`). */
  private failBuffered(): void {
    const err = this.dictionaryError!;
    while (this.head < this.queue.length) {
      const p = this.queue[this.head]!;
      this.queue[this.head++] = undefined as unknown as Pending;
      this.counters.failed++;
      this.onError?.(err, p.id);
    }
    this.queue = [];
    this.head = 0;
    for (const w of this.spaceWaiters.splice(0)) w();
    if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private pump(): void {
    if (!this.dictionaryStored) return;
    while (this.inFlight < this.options.maxInFlight && this.head < this.queue.length) {
      const p = this.queue[this.head]!;
      this.queue[this.head++] = undefined as unknown as Pending;
      this.send(p);
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    while (this.spaceWaiters.length > 0 && this.buffered < this.options.maxBuffered)
      this.spaceWaiters.shift()!();
    if (this.inFlight === 0 && this.buffered === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private send(p: Pending): void {
    this.inFlight++;
    p.attempts++;
    this.js.publish(p.subject, p.data, { msgID: p.id, timeout: this.options.ackTimeoutMs }).then(
      (ack) => {
        if (ack.duplicate) this.counters.duplicates++;
        else this.counters.acked++;
        this.inFlight--;
        this.pump();
      },
      (err: unknown) => {
        const e = fromNatsError(err, p.subject);
        if (p.attempts <= this.options.maxRetries && e.code !== 'OVERSIZE') {
          // Keep the in-flight slot during the backoff: a struggling server gets less, not more.
          this.counters.retries++;
          const delay = this.options.retryBackoffMs * 2 ** (p.attempts - 1);
          setTimeout(() => {
            this.inFlight--;
            this.send(p);
          }, delay);
          return;
        }
        this.counters.failed++;
        this.onError?.(e, p.id);
        this.inFlight--;
        this.pump();
      },
    );
  }
}
