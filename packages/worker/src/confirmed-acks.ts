import type { NatsConnection } from 'nats';
import type { DeliveredMsg } from './delivered-msg.js';
import type { WorkerCounters } from './worker.js';
import type { WorkerLog } from './message-holds.js';

const ACK = new TextEncoder().encode('+ACK');

export interface ConfirmedAcksContext {
  nc: () => NatsConnection | undefined;
  /** Per attempt. */
  timeoutMs: number;
  /**
   * How long to keep trying. Past the consumer's ack wait the message is redelivered anyway,
   * and the redelivery is recognised as applied (see `PartitionState.applied`).
   */
  giveUpMs: number;
  signal: AbortSignal;
  counters: WorkerCounters;
  log: WorkerLog;
}

/**
 * Acks that the consumer leader confirms, retried until it does.
 *
 * A plain ack is fire-and-forget: one sent while the consumer's leader is being re-elected (its
 * server went down) reaches no one, and the message comes back after the ack wait to be trained
 * a second time. The ack of a message whose example was applied is therefore a request: the
 * leader answers once it has processed it. `JsMsg.ackAck()` cannot be retried (it marks the
 * message acked before sending), so the request is made here on the message's ack subject.
 */
export class ConfirmedAcks {
  private open = 0;
  private idle: (() => void)[] = [];

  constructor(private readonly ctx: ConfirmedAcksContext) {}

  /** Acks still waiting for their confirmation. */
  get pending(): number {
    return this.open;
  }

  /** Resolves true once confirmed, false when given up (time, stop, or closed connection). */
  async ack(m: DeliveredMsg): Promise<boolean> {
    // nothing else may ack, nak or extend it from now on
    m.didAck = true;
    this.open++;
    try {
      return await this.send(m.reply);
    } finally {
      if (--this.open === 0) this.idle.splice(0).forEach((r) => r());
    }
  }

  /** Resolves when no ack waits for its confirmation. */
  whenIdle(): Promise<void> {
    if (this.open === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  private async send(subject: string): Promise<boolean> {
    const { counters, timeoutMs, giveUpMs, signal } = this.ctx;
    const deadline = Date.now() + giveUpMs;
    for (let attempt = 0; ; attempt++) {
      const nc = this.ctx.nc();
      if (!nc || nc.isClosed()) break;
      try {
        await nc.request(subject, ACK, { timeout: timeoutMs });
        return true;
      } catch (e) {
        // no responders (no consumer leader right now) or a timeout: the ack may be lost
        counters.ackRetries++;
        if (signal.aborted || Date.now() + timeoutMs > deadline) {
          this.ctx.log('warn', 'ack not confirmed; its redelivery will be recognised', {
            subject,
            error: String(e),
          });
          break;
        }
        await new Promise((r) => setTimeout(r, Math.min(2000, 50 * 2 ** Math.min(attempt, 6))));
      }
    }
    counters.acksUnconfirmed++;
    return false;
  }
}
