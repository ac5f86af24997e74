import type { Msg, NatsConnection, Subscription } from 'nats';
import { encodeErrorReply, FreshetError, toErrorEnvelope } from '@freshet/protocol';
import { fromNatsError } from './request.js';

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
  /** The endpoint's handler with its limits: a shard host calls it for requests it carries. */
  readonly handler: FrameHandler;
  /** Stops taking requests and waits for the in-flight ones to be answered. */
  drain(): Promise<void>;
}

/** A frame handler behind an endpoint's limits, callable for requests that came another way. */
export interface FrameHandler {
  readonly inFlight: number;
  /**
   * The reply to `data`: the handler's frame, or an error envelope for what it threw (OVERSIZE,
   * OVERLOADED and the like included). Never throws and never rejects.
   */
  call(data: Uint8Array, msg?: Msg): Uint8Array | Promise<Uint8Array>;
  /** Resolves once no call is in flight. */
  idle(): Promise<void>;
}

/**
 * The limits of {@link frameEndpoint} around `handler`, without a subscription: the size check,
 * the in-flight bound and error envelopes for whatever it throws.
 */
export function frameHandler(
  subject: string,
  handler: (data: Uint8Array, msg?: Msg) => Uint8Array | Promise<Uint8Array>,
  opts: EndpointOptions = {},
): FrameHandler {
  const maxInFlight = opts.maxInFlight ?? 256;
  const maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
  let inFlight = 0;
  let waiters: (() => void)[] = [];
  const fail = (err: unknown): Uint8Array => {
    const e = err instanceof Error ? err : new Error(String(err));
    opts.onError?.(e, subject);
    return encodeErrorReply(toErrorEnvelope(err));
  };
  const finish = () => {
    inFlight--;
    if (inFlight === 0) {
      const w = waiters;
      waiters = [];
      for (const r of w) r();
    }
  };
  return {
    get inFlight() {
      return inFlight;
    },
    idle() {
      return inFlight === 0 ? Promise.resolve() : new Promise<void>((r) => waiters.push(r));
    },
    call(data, msg) {
      if (data.byteLength > maxBytes)
        return fail(new FreshetError('OVERSIZE', `${data.byteLength} B > ${maxBytes} B`));
      if (inFlight >= maxInFlight)
        return fail(new FreshetError('OVERLOADED', `${inFlight} requests in flight on ${subject}`));
      inFlight++;
      let out: Uint8Array | Promise<Uint8Array>;
      try {
        out = handler(data, msg);
      } catch (e) {
        finish();
        return fail(e);
      }
      if (out instanceof Uint8Array) {
        finish();
        return out;
      }
      return out.then(
        (reply) => {
          finish();
          return reply;
        },
        (e: unknown) => {
          finish();
          return fail(e);
        },
      );
    },
  };
}

/**
 * A request-reply endpoint for binary frames. A handler's thrown FreshetError is sent back as an
 * error envelope; any other throw becomes INTERNAL. The endpoint itself never throws, so one bad
 * request cannot stop an actor.
 */
export function frameEndpoint(
  nc: NatsConnection,
  subject: string,
  handler: (data: Uint8Array, msg?: Msg) => Uint8Array | Promise<Uint8Array>,
  opts: EndpointOptions = {},
): Endpoint {
  const h = frameHandler(subject, handler, opts);
  // A reply the server would refuse (over max_payload) throws in respond: inside a subscription
  // callback that would reach the connection's reader, or be an unhandled rejection. The asker
  // gets an OVERSIZE envelope instead, and the endpoint keeps serving.
  const respond = (msg: Msg, reply: Uint8Array) => {
    if (!msg.reply) return;
    try {
      msg.respond(reply);
    } catch (e) {
      const err = fromNatsError(e, subject);
      opts.onError?.(err, subject);
      try {
        msg.respond(encodeErrorReply(err.toEnvelope()));
      } catch {
        // the connection is closing: the asker times out
      }
    }
  };
  const sub: Subscription = nc.subscribe(subject, {
    ...(opts.queue ? { queue: opts.queue } : {}),
    callback: (err, msg) => {
      if (err) return;
      const out = h.call(msg.data, msg);
      if (out instanceof Uint8Array) respond(msg, out);
      else void out.then((reply) => respond(msg, reply));
    },
  });
  return {
    subject,
    handler: h,
    get inFlight() {
      return h.inFlight;
    },
    async drain() {
      await sub.drain();
      await h.idle();
    },
  };
}
