import { nanos, type Msg, type NatsConnection, type Subscription } from 'nats';
import { newInbox } from '@freshet/nats';
import { delivered, type DeliveredMsg } from './delivered-msg.js';

/** How one pull request ended. */
export type PullEnd =
  /** Every requested message arrived. */
  | 'full'
  /** The server's request expired (408): what was not delivered never will be. */
  | 'expired'
  /** The server refused or cut the request (409/503/…: leadership change, max waiting, no JetStream). */
  | 'refused'
  /** No word from the server within `expiresMs + graceMs` (it went away; a reconnect). */
  | 'silent'
  /** The feed was closed while the request was open. */
  | 'closed';

export interface PullOutcome {
  end: PullEnd;
  /** Messages that arrived while this request was the open one. */
  delivered: number;
  /** Status code and description of a refusal. */
  status?: string;
}

export interface PullFeedOptions {
  stream: string;
  durable: string;
  /** Server-side expiry of each pull request (JetStream requires ≥ 1 s for long polls here). */
  expiresMs: number;
  /** How long past `expiresMs` a request may stay unanswered before it is given up as `silent`. */
  graceMs: number;
  /** Timeout of `ackAck()` on delivered messages. */
  ackTimeoutMs: number;
  /** JetStream API prefix (`$JS.API` unless a domain or import says otherwise). */
  apiPrefix?: string;
}

interface Open {
  want: number;
  delivered: number;
  done: (o: PullOutcome) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * One durable pull consumer's deliveries on ONE inbox subscription that lives until `close()`,
 * with pull requests issued one at a time by the caller.
 *
 * Why not `Consumer.fetch()` (nats.js 2.29): each fetch subscribes its own inbox and unsubscribes
 * it on a client-side timer of 1.05 × expires, or when its pending count says the request is
 * over. A client that runs late (a busy event loop runs due timers before it reads the socket;
 * a starved process on a loaded machine) unsubscribes while messages the server already
 * delivered to that request are still unread: the client drops them, the server counts them
 * delivered, and they stay unacked until the consumer's ack wait — minutes for a joining worker.
 * A missed-heartbeat reset inside a fetch issues a second request that outlives the fetch's
 * subscription the same way. Here the subscription outlives every request, and messages of one
 * request arrive before its 408 on the same subscription, so a late client only reads late.
 */
export class PullFeed {
  private readonly sub: Subscription;
  private open: Open | undefined;
  private closed = false;
  private readonly next: string;

  constructor(
    private readonly nc: NatsConnection,
    private readonly opts: PullFeedOptions,
    /** Every delivered message, whichever request it answers (or none: a late one). */
    private readonly onMessage: (m: DeliveredMsg) => void,
  ) {
    this.next = `${opts.apiPrefix ?? '$JS.API'}.CONSUMER.MSG.NEXT.${opts.stream}.${opts.durable}`;
    this.sub = nc.subscribe(newInbox(nc), { callback: (err, msg) => this.arrived(err, msg) });
  }

  /** Messages of the open request so far (0 when none is open). */
  get delivered(): number {
    return this.open?.delivered ?? 0;
  }

  /**
   * Asks for up to `batch` messages and resolves when that request is over. Its messages are
   * handed to `onMessage` as they arrive, before this resolves.
   */
  request(batch: number): Promise<PullOutcome> {
    if (this.closed) return Promise.resolve({ end: 'closed', delivered: 0 });
    if (this.open) throw new Error('PullFeed: one request at a time');
    return new Promise<PullOutcome>((resolve) => {
      const o: Open = {
        want: batch,
        delivered: 0,
        done: (r) => {
          clearTimeout(o.timer);
          if (this.open === o) this.open = undefined;
          resolve(r);
        },
        timer: setTimeout(
          () => o.done({ end: 'silent', delivered: o.delivered }),
          this.opts.expiresMs + this.opts.graceMs,
        ),
      };
      this.open = o;
      try {
        this.nc.publish(this.next, JSON.stringify({ batch, expires: nanos(this.opts.expiresMs) }), {
          reply: this.sub.getSubject(),
        });
      } catch (e) {
        // connection closed or draining
        o.done({ end: 'refused', delivered: 0, status: String(e) });
      }
    });
  }

  /**
   * Stops listening. Call it when no request is open (or accept losing what a still-open one
   * delivers later: those messages come back after the ack wait).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.open?.done({ end: 'closed', delivered: this.open.delivered });
    this.sub.unsubscribe();
  }

  private arrived(err: Error | null, msg: Msg): void {
    if (err) {
      // a subscription error (permissions) is terminal for it
      this.open?.done({ end: 'refused', delivered: this.open.delivered, status: err.message });
      return;
    }
    const status = msg.data.length === 0 ? msg.headers?.code : undefined;
    if (status !== undefined && status >= 100) {
      if (status === 100) return; // idle heartbeat / flow control: not requested, ignore
      const o = this.open;
      if (!o) return; // the end of a request already given up as silent
      o.done(
        status === 408 || status === 404
          ? { end: 'expired', delivered: o.delivered }
          : { end: 'refused', delivered: o.delivered, status: `${status} ${msg.headers?.description ?? ''}` },
      );
      return;
    }
    const m = delivered(msg, this.opts.ackTimeoutMs);
    const o = this.open;
    if (o) o.delivered++;
    this.onMessage(m);
    if (o && o.delivered >= o.want) o.done({ end: 'full', delivered: o.delivered });
  }
}
