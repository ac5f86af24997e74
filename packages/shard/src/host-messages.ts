import type { NatsConnection } from 'nats';
import { frameEndpoint, type Endpoint } from '@freshet/nats';
import {
  decodeHostRequest,
  encodeHostReply,
  FreshetError,
  subjects,
  type HostPartKind,
  type HostReply,
} from '@freshet/protocol';
import type { HostedShard } from './hosted-shard.js';

/** Host messages handled at once by default (shard host option `hostMessagesInFlight`). */
export const HOST_MESSAGES_IN_FLIGHT = 1024;
/** A host message's size bound (the server's max_payload is usually lower). */
export const HOST_MESSAGE_MAX_BYTES = 64 * 1024 * 1024;

/**
 * A shard host's two endpoints for host messages (ps-mux.ts, docs/architecture.md): each part
 * goes to its shard's own pull or push handler, with that shard's limits, as if it had come on
 * the shard's subject; the reply carries each shard's reply frame, or says the shard does not run
 * here (moved away, not started yet). Parts are handed over in order, synchronously (or posted
 * to the shard's thread, whose port keeps their order), so a shard sees one host message's parts,
 * and consecutive host messages, in the order they were sent.
 */
export function hostEndpoints(
  nc: NatsConnection,
  cluster: string,
  host: string,
  running: ReadonlyMap<number, HostedShard>,
  maxInFlight = HOST_MESSAGES_IN_FLIGHT,
): Endpoint[] {
  const s = subjects(cluster);
  const serve =
    (op: HostPartKind) =>
    (data: Uint8Array): Uint8Array | Promise<Uint8Array> => {
      const req = decodeHostRequest(data);
      if (req.op !== op) {
        throw new FreshetError('BAD_REQUEST', `a host ${req.op} message on the ${op} subject`);
      }
      let pending = false;
      const replies = req.parts.map((p) => {
        const r = running.get(p.shard)?.hostCall(op, p.frame);
        if (r instanceof Promise) pending = true;
        return r;
      });
      if (!pending) return encodeHostReply(replies as HostReply);
      return Promise.all(replies.map((r) => Promise.resolve(r))).then(encodeHostReply);
    };
  const opts = { maxInFlight, maxBytes: HOST_MESSAGE_MAX_BYTES };
  return [
    frameEndpoint(nc, s.hostPull(host), serve('pull'), opts),
    frameEndpoint(nc, s.hostPush(host), serve('push'), opts),
  ];
}
