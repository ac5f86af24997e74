import type { MessagePort } from 'node:worker_threads';
import type { HostPartKind } from '@freshet/protocol';
import { PortBatch, type PackedFrames } from './port-batch.js';
import {
  fromTag,
  PartCalls,
  partTag,
  serveParts,
  type HandOffs,
  type OwnRoute,
  type RoutedReply,
} from './part-calls.js';

/** What shard threads send each other over their ports. */
type PeerMessage = { t: 'calls' | 'replies'; parts: PackedFrames };

/**
 * A shard thread's links to its host's other shard threads (shard-thread.ts): a host message that
 * reaches this thread hands each part for a shard of another thread straight to that thread, over
 * the port the host's thread gave the two of them, never through the host's thread. `routes` is
 * the host's word on which thread runs which shard; the thread that gets a part decides, by what
 * it runs now, whether the shard is there (a stale route is answered "not here").
 */
export class ThreadPeers {
  private readonly links = new Map<number, { port: MessagePort; calls: PartCalls }>();
  private readonly routes = new Map<number, number>();

  /** `serve`: a part for a shard of this thread, by the shard's index. */
  constructor(private readonly serve: OwnRoute) {}

  /** The port to shard thread `thread` (replacing one to a thread that died). */
  link(thread: number, port: MessagePort): void {
    this.links.get(thread)?.port.close();
    const calls = new PartCalls((parts) =>
      port.postMessage({ t: 'calls', parts } satisfies PeerMessage, [parts.meta.buffer, parts.data.buffer]),
    );
    const replies = new PortBatch((parts) =>
      port.postMessage({ t: 'replies', parts } satisfies PeerMessage, [parts.meta.buffer, parts.data.buffer]),
    );
    port.on('message', (m: PeerMessage) => {
      if (m.t === 'replies') calls.replies(m.parts);
      else serveParts(m.parts, (tag, frame) => this.serve(...fromTag(tag), frame), replies);
    });
    // the other thread ended (or died): what it had not answered was not served there
    port.on('close', () => {
      if (this.links.get(thread)?.port === port) this.links.delete(thread);
      calls.fail();
      replies.drop();
    });
    this.links.set(thread, { port, calls });
  }

  /** Route changes: shard → thread (−1: no thread of this host runs it). */
  route(set: readonly (readonly [number, number])[]): void {
    for (const [shard, thread] of set) {
      if (thread < 0) this.routes.delete(shard);
      else this.routes.set(shard, thread);
    }
  }

  /** A part for `shard` of another thread, in its group there (undefined: no live thread known to run it). */
  call(shard: number, kind: HostPartKind, frame: Uint8Array, handOffs: HandOffs): RoutedReply {
    const t = this.routes.get(shard);
    const calls = t === undefined ? undefined : this.links.get(t)?.calls;
    return calls && handOffs.add(calls, partTag(shard, kind), frame);
  }

  close(): void {
    for (const l of [...this.links.values()]) l.port.close();
    this.links.clear();
  }
}
