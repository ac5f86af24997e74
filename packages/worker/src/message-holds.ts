import { headers as natsHeaders, type NatsConnection } from 'nats';
import type { DeadLetters } from '@freshet/nats';
import type { DeadLetterReason } from '@freshet/protocol';
import type { ConfirmedAcks } from './confirmed-acks.js';
import type { DeliveredMsg } from './delivered-msg.js';
import type { Buffered, PartitionState, Tracked, WorkerCounters, WorkerLog } from './worker-types.js';

/**
 * When an example's label became known, for freshness (event → serving): the publication of its
 * newest message (a pre-labelled event, or the click that made an impression positive), or, for a
 * joined negative, the moment the joiner closed its attribution window. Measuring negatives from
 * the impression would count the window itself as staleness.
 */
export function labelKnownAt(b: Buffered): number {
  if (b.joined && b.example.label <= 0) return b.at;
  let newest = Number.NEGATIVE_INFINITY;
  for (const d of b.deps) newest = Math.max(newest, Number(d.msg.info.timestampNanos / 1_000_000));
  return Number.isFinite(newest) ? newest : b.at;
}

export interface MessageHoldsContext {
  nakDelayMs: number;
  acks: ConfirmedAcks;
  /** Off: applied events get plain acks like every other (options.consumer.confirmAcks). */
  confirmAcks: boolean;
  counters: WorkerCounters;
  dlCounts: Record<DeadLetterReason, number>;
  /** The subject dead letters are published on when the dead-letter stream cannot store them. */
  deadLetterSubject: string;
  dlq: () => DeadLetters | undefined;
  nc: () => NatsConnection | undefined;
  log: WorkerLog;
}

/** The holds on fetched messages: the last one to go acks (or naks) the message. */
export class MessageHolds {
  constructor(private readonly ctx: MessageHoldsContext) {}

  /** Drops one hold on a message; the last one acks it (or naks it when it was handed back). */
  release(t: Tracked): void {
    void this.unhold(t);
  }

  /** {@link release}, returning the confirmation of an applied message's ack when it sent one. */
  private unhold(t: Tracked): Promise<boolean> | undefined {
    if (--t.refs > 0) return undefined;
    const ps = t.part;
    let confirmed: Promise<boolean> | undefined;
    if (t.nak) {
      t.msg.nak(this.ctx.nakDelayMs);
      this.ctx.counters.naked++;
    } else if (t.applied && this.ctx.confirmAcks) {
      confirmed = this.ackApplied(t.msg, ps);
    } else {
      t.msg.ack();
      this.ctx.counters.acked++;
    }
    ps.tracked.delete(t.seq);
    this.checkIdle(ps);
    return confirmed;
  }

  /**
   * Acks a message whose example is applied (a settled batch's, or a redelivery of one) and
   * waits for the confirmation; its sequence stays in `applied` until then, so a redelivery in
   * between is acked, not trained.
   */
  ackApplied(m: DeliveredMsg, ps: PartitionState): Promise<boolean> {
    this.ctx.counters.acked++;
    ps.applied.acking(m.seq);
    ps.confirming++;
    return this.ctx.acks.ack(m).then((ok) => {
      if (ok) ps.applied.confirmed(m.seq, Date.now());
      else ps.applied.awaitRedelivery(m.seq, Date.now());
      ps.confirming--;
      this.checkIdle(ps);
      return ok;
    });
  }

  private checkIdle(ps: PartitionState): void {
    if (ps.tracked.size === 0 && ps.confirming === 0 && ps.idle.length > 0) {
      const w = ps.idle.splice(0);
      w.forEach((r) => r());
    }
  }

  /**
   * Stores the message's payload on the dead-letter stream with its reason; the message is held
   * until the dead letter is stored, then acked. If it cannot be stored, the message is handed
   * back (redelivered) — after a few deliveries it is published without JetStream and acked, so a
   * missing dead-letter stream cannot wedge a partition.
   */
  deadLetter(t: Tracked, reason: DeadLetterReason, message: string): void {
    const { counters, dlCounts } = this.ctx;
    t.refs++;
    const m = t.msg;
    this.ctx
      .dlq()!
      .send(m.data, { reason, message }, { subject: m.subject, seq: t.seq })
      .then(
        () => {
          dlCounts[reason]++;
          counters.deadLettered++;
          this.release(t);
        },
        (e: unknown) => {
          counters.deadLetterFailures++;
          if (m.info.deliveryCount >= 5) {
            const h = natsHeaders();
            h.set('Freshet-Reason', reason);
            h.set('Freshet-Message', message.replace(/[\r\n]/g, ' ').slice(0, 256));
            try {
              this.ctx.nc()?.publish(this.ctx.deadLetterSubject, m.data, { headers: h });
            } catch {
              // best effort: the event is dropped either way
            }
            dlCounts[reason]++;
            counters.deadLettered++;
          } else {
            this.ctx.log('warn', 'dead letter not stored; event handed back', { reason, error: String(e) });
            t.nak = true;
          }
          this.release(t);
        },
      );
  }

  /**
   * Releases a batch's holds on its messages: `applied` acks them (confirmed), `handBack` naks
   * them, `discarded` (not applied, e.g. dead-lettered) acks them plainly. Resolves once the
   * confirmations are in (or given up): until then an applied batch's manifest must stay, for a
   * next owner that gets the messages again.
   */
  settleBatch(items: Buffered[], outcome: 'applied' | 'handBack' | 'discarded'): Promise<void> {
    const confirmations: Promise<boolean>[] = [];
    for (const b of items) {
      for (const d of b.deps) {
        if (outcome === 'handBack') d.nak = true;
        else if (outcome === 'applied') d.applied = true;
        const c = this.unhold(d);
        if (c) confirmations.push(c);
      }
    }
    return Promise.all(confirmations).then(() => undefined);
  }
}
