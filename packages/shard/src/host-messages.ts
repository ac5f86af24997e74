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
import { HandOffs, isGrouped, type GroupedReply, type RoutedReply } from './part-calls.js';

/** The queue group of a threaded host's endpoints: its own thread and its shard threads. */
export function hostQueue(host: string): string {
  return `freshet-shard-host-${host}`;
}

/**
 * Where a host message's part goes: its shard's reply, or undefined (the shard does not run here);
 * a part for a shard of another thread joins that thread's group in `handOffs`.
 */
export type PartRoute = (
  shard: number,
  kind: HostPartKind,
  frame: Uint8Array,
  handOffs: HandOffs,
) => RoutedReply;

/** Host messages handled at once by default (shard host option `hostMessagesInFlight`). */
export const HOST_MESSAGES_IN_FLIGHT = 1024;
/** A host message's size bound (the server's max_payload is usually lower). */
export const HOST_MESSAGE_MAX_BYTES = 64 * 1024 * 1024;

/**
 * A shard host's two endpoints for host messages (ps-mux.ts, docs/architecture.md): each part
 * goes to its shard's own pull or push handler, with that shard's limits, as if it had come on
 * the shard's subject; the reply carries each shard's reply frame, or says the shard does not run
 * here (moved away, not started yet). Parts are handed over in order, synchronously (or posted
 * to the shard's thread, whose port keeps their order), so a shard sees one host message's parts
 * in the order they were sent, and consecutive host messages too while one endpoint answers them.
 * A message's parts for one other thread go to it as one group (part-calls.ts, HandOffs).
 * `queue`: a host with shard threads answers on its own thread and on each shard thread, a queue
 * group, so two host messages may reach a shard through different threads, in either order.
 */
export function hostEndpoints(
  nc: NatsConnection,
  cluster: string,
  host: string,
  route: PartRoute,
  opts: { maxInFlight?: number | undefined; queue?: string | undefined; onMessage?: () => void } = {},
): Endpoint[] {
  const s = subjects(cluster);
  const serve =
    (op: HostPartKind) =>
    (data: Uint8Array): Uint8Array | Promise<Uint8Array> => {
      const req = decodeHostRequest(data);
      opts.onMessage?.();
      if (req.op !== op) {
        throw new FreshetError('BAD_REQUEST', `a host ${req.op} message on the ${op} subject`);
      }
      const handOffs = new HandOffs();
      const out: HostReply = new Array<Uint8Array | undefined>(req.parts.length);
      const grouped: [at: number, r: GroupedReply][] = [];
      const waits: Promise<unknown>[] = [];
      req.parts.forEach((p, i) => {
        const r = route(p.shard, op, p.frame, handOffs);
        if (r instanceof Promise) waits.push(r.then((f) => (out[i] = f)));
        else if (isGrouped(r)) grouped.push([i, r]);
        else out[i] = r;
      });
      for (const g of handOffs.groups()) waits.push(g.done);
      if (waits.length === 0) return encodeHostReply(out);
      // a shard's own handler and a group never reject
      return Promise.all(waits).then(() => {
        for (const [i, r] of grouped) out[i] = r.group.result![r.at];
        return encodeHostReply(out);
      });
    };
  const o = {
    maxInFlight: opts.maxInFlight ?? HOST_MESSAGES_IN_FLIGHT,
    maxBytes: HOST_MESSAGE_MAX_BYTES,
    ...(opts.queue ? { queue: opts.queue } : {}),
  };
  return [
    frameEndpoint(nc, s.hostPull(host), serve('pull'), o),
    frameEndpoint(nc, s.hostPush(host), serve('push'), o),
  ];
}
