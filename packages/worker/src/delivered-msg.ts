import type { Msg } from 'nats';
// nats.js's own JetStream message (ack/nak/working/info over the `$JS.ACK` reply subject) is not
// re-exported at the top level; the package has no exports map that forbids this path. This is
// the one place that reaches into nats.js internals: a nats.js upgrade is checked here.
import { toJsMsg, type JsMsgImpl } from 'nats/lib/jetstream/jsmsg.js';

/** A delivered JetStream message with its ack subject (`reply`), which confirmed acks request on. */
export type DeliveredMsg = JsMsgImpl;

/** Wraps a message a pull request delivered. */
export function delivered(msg: Msg, ackTimeoutMs: number): DeliveredMsg {
  return toJsMsg(msg, ackTimeoutMs) as DeliveredMsg;
}
