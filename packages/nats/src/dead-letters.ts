import { headers, type JetStreamClient, type NatsConnection } from 'nats';
import {
  deadLetterReasons,
  subjects,
  type DeadLetter,
  type DeadLetterReason,
  type Subjects,
} from '@freshet/protocol';
import { fromNatsError } from './request.js';

/** Header names of a dead letter; the body is the rejected payload (possibly truncated). */
export const deadLetterHeaders = {
  reason: 'Freshet-Reason',
  message: 'Freshet-Message',
  sourceSubject: 'Freshet-Source-Subject',
  sourceSeq: 'Freshet-Source-Seq',
  truncated: 'Freshet-Truncated',
} as const;

/** Where a rejected payload came from, for the operator reading the dead-letter stream. */
export interface DeadLetterSource {
  subject?: string;
  /** Stream sequence of the rejected message: makes the dead letter idempotent on redelivery. */
  seq?: number;
}

export interface DeadLettersOptions {
  cluster: string;
  /** Payload bytes kept in a dead letter; the rest is cut off (and flagged in a header). */
  maxPayloadBytes?: number;
  ackTimeoutMs?: number;
}

// Header values are single lines of printable text.
const headerSafe = (s: string) => s.replace(/[\r\n\t\0]+/g, ' ').slice(0, 512);

/**
 * Publishes rejected input to `freshet.<cluster>.dlq` (stored by the dead-letter stream) with the
 * reason code in a header, and counts by reason. Publishing waits for the JetStream ack, so a
 * caller acks the original message only once its dead letter is stored.
 */
export class DeadLetters {
  private readonly js: JetStreamClient;
  private readonly s: Subjects;
  private readonly maxPayloadBytes: number;
  private readonly timeout: number;
  private readonly byReason = Object.fromEntries(deadLetterReasons.map((r) => [r, 0])) as Record<
    DeadLetterReason,
    number
  >;

  constructor(nc: NatsConnection, opts: DeadLettersOptions) {
    this.s = subjects(opts.cluster);
    this.maxPayloadBytes = opts.maxPayloadBytes ?? 256 * 1024;
    this.timeout = opts.ackTimeoutMs ?? 5_000;
    this.js = nc.jetstream({ timeout: this.timeout });
  }

  /** Dead letters sent, by reason (all reasons present, zeros included). */
  counts(): Record<DeadLetterReason, number> {
    return { ...this.byReason };
  }
  get total(): number {
    return Object.values(this.byReason).reduce((a, b) => a + b, 0);
  }

  /** Stores one dead letter. Throws UNAVAILABLE/TIMEOUT when it could not be stored. */
  async send(payload: Uint8Array, dl: DeadLetter, source: DeadLetterSource = {}): Promise<void> {
    const h = headers();
    h.set(deadLetterHeaders.reason, dl.reason);
    h.set(deadLetterHeaders.message, headerSafe(dl.message) || '-');
    if (source.subject) h.set(deadLetterHeaders.sourceSubject, headerSafe(source.subject));
    if (source.seq !== undefined) h.set(deadLetterHeaders.sourceSeq, String(source.seq));
    let body = payload;
    if (payload.byteLength > this.maxPayloadBytes) {
      body = payload.subarray(0, this.maxPayloadBytes);
      h.set(deadLetterHeaders.truncated, String(payload.byteLength));
    }
    const opts: Parameters<JetStreamClient['publish']>[2] = { headers: h, timeout: this.timeout };
    if (source.seq !== undefined && source.subject) opts.msgID = `dlq:${source.subject}:${source.seq}`;
    try {
      await this.js.publish(this.s.deadLetter, body, opts);
    } catch (e) {
      throw fromNatsError(e, this.s.deadLetter);
    }
    this.byReason[dl.reason]++;
  }
}
