import type { Msg, NatsConnection, Subscription } from 'nats';
import { encodeErrorReply, FreshetError, toErrorEnvelope } from '@freshet/protocol';

export interface EndpointOptions {
  /** Queue group: N actors share one subject. */
  queue?: string;
  /** Requests handled at once; beyond it requests get OVERLOADED (bounded memory, not a queue). */
  maxInFlight?: number;
  /** Payloads above this are rejected with OVERSIZE before decoding. */
  maxBytes?: number;
  /** Called for every error reply sent (counters, logs). */
  onError?: (err: FreshetError | Error, subject: string) => void;
}

export interface Endpoint {
  readonly subject: string;
  readonly inFlight: number;
  /** Stops taking requests and waits for the in-flight ones to be answered. */
  drain(): Promise<void>;
}

/**
 * A request-reply endpoint for binary frames. A handler's thrown FreshetError is sent back as an
 * error envelope; any other throw becomes INTERNAL. The endpoint itself never throws, so one bad
 * request cannot stop an actor.
 */
export function frameEndpoint(
  nc: NatsConnection,
  subject: string,
  handler: (data: Uint8Array, msg: Msg) => Uint8Array | Promise<Uint8Array>,
  opts: EndpointOptions = {},
): Endpoint {
  const maxInFlight = opts.maxInFlight ?? 256;
  const maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
  let inFlight = 0;
  let idle: (() => void) | undefined;
  const fail = (msg: Msg, err: unknown) => {
    const e = err instanceof Error ? err : new Error(String(err));
    opts.onError?.(e, subject);
    if (msg.reply) msg.respond(encodeErrorReply(toErrorEnvelope(err)));
  };
  const sub: Subscription = nc.subscribe(subject, {
    ...(opts.queue ? { queue: opts.queue } : {}),
    callback: (err, msg) => {
      if (err) return;
      if (msg.data.byteLength > maxBytes) {
        fail(msg, new FreshetError('OVERSIZE', `${msg.data.byteLength} B > ${maxBytes} B`));
        return;
      }
      if (inFlight >= maxInFlight) {
        fail(msg, new FreshetError('OVERLOADED', `${inFlight} requests in flight on ${subject}`));
        return;
      }
      inFlight++;
      let out: Uint8Array | Promise<Uint8Array>;
      try {
        out = handler(msg.data, msg);
      } catch (e) {
        inFlight--;
        fail(msg, e);
        return;
      }
      const finish = () => {
        inFlight--;
        if (inFlight === 0) idle?.();
      };
      if (out instanceof Uint8Array) {
        if (msg.reply) msg.respond(out);
        finish();
        return;
      }
      out.then(
        (reply) => {
          if (msg.reply) msg.respond(reply);
          finish();
        },
        (e: unknown) => {
          fail(msg, e);
          finish();
        },
      );
    },
  });
  return {
    subject,
    get inFlight() {
      return inFlight;
    },
    async drain() {
      await sub.drain();
      if (inFlight > 0) await new Promise<void>((r) => (idle = r));
    },
  };
}
