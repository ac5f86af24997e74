import {
  compileParseOptions,
  deadLetterReasons,
  isLabelsSubject,
  parseEvent,
  type CompiledParseOptions,
  type DeadLetterReason,
  type FeedbackEvent,
  type ParseEventOptions,
  type ParseEventResult,
} from '@freshet/protocol';
import type { DeadLetters } from '@freshet/nats';

/** The parts of a JetStream message the validator needs (a `JsMsg` fits). */
export interface IngestMessage {
  data: Uint8Array;
  subject: string;
  /** Stream sequence; makes a redelivered bad message's dead letter idempotent. */
  seq?: number;
}

/** Counters of an {@link Ingest}. */
export interface IngestCounters {
  accepted: number;
  rejected: Record<DeadLetterReason, number>;
}

/**
 * An `example` is accepted on the labels subjects only (published by the labeller role; NATS
 * permissions keep plain publishers off them): FORBIDDEN_KIND anywhere else.
 */
function checkedKind(r: ParseEventResult, subject: string): ParseEventResult {
  if (r.ok && r.event.kind === 'example' && !isLabelsSubject(subject)) {
    return {
      ok: false,
      reason: 'FORBIDDEN_KIND',
      message: 'example events are accepted on the labels subjects only',
    };
  }
  return r;
}

/**
 * Validates one message from the feedback stream. A valid event is returned; an invalid one is
 * stored on the dead-letter subject with its reason and `undefined` is returned, so the caller
 * acks it and moves on. Never throws for bad input; throws only when the dead letter could not
 * be stored (then the caller should not ack, and the message comes back).
 */
export async function validateOrDeadLetter(
  msg: IngestMessage,
  deadLetters: DeadLetters,
  options: ParseEventOptions | CompiledParseOptions = {},
  now?: number,
): Promise<FeedbackEvent | undefined> {
  const r = checkedKind(parseEvent(msg.data, options, now), msg.subject);
  if (r.ok) return r.event;
  const source: { subject: string; seq?: number } = { subject: msg.subject };
  if (msg.seq !== undefined) source.seq = msg.seq;
  await deadLetters.send(msg.data, { reason: r.reason, message: r.message }, source);
  return undefined;
}

/**
 * The validation stage of the ingestion pipeline with its counters: what a worker calls for each
 * message it fetches, before the joiner.
 */
export class Ingest {
  private readonly parse: CompiledParseOptions;
  private readonly c: IngestCounters = {
    accepted: 0,
    rejected: Object.fromEntries(deadLetterReasons.map((r) => [r, 0])) as Record<DeadLetterReason, number>,
  };

  constructor(
    readonly deadLetters: DeadLetters,
    parse: ParseEventOptions = {},
  ) {
    this.parse = compileParseOptions(parse);
  }

  counters(): IngestCounters {
    return { accepted: this.c.accepted, rejected: { ...this.c.rejected } };
  }

  /** {@link validateOrDeadLetter} with counting. */
  async validate(msg: IngestMessage, now?: number): Promise<FeedbackEvent | undefined> {
    const r = checkedKind(parseEvent(msg.data, this.parse, now), msg.subject);
    if (r.ok) {
      this.c.accepted++;
      return r.event;
    }
    const source: { subject: string; seq?: number } = { subject: msg.subject };
    if (msg.seq !== undefined) source.seq = msg.seq;
    await this.deadLetters.send(msg.data, { reason: r.reason, message: r.message }, source);
    this.c.rejected[r.reason]++;
    return undefined;
  }
}
