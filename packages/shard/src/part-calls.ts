import { PortBatch, unpackFrames, type PackedFrames } from './port-batch.js';

/** A part's reply: its shard's reply frame, or undefined (the shard does not run there). */
export type PartReply = Uint8Array | Promise<Uint8Array | undefined> | undefined;
/** A part for a shard of this thread: its reply (undefined: not running here). */
export type OwnRoute = (shard: number, kind: 'pull' | 'push', frame: Uint8Array) => PartReply;

/** The parts of one host message handed to one other thread: their replies, in order, once back. */
export interface PartGroup {
  readonly done: Promise<void>;
  /** Set when `done` settles: each part's reply (undefined: not served there). */
  result: (Uint8Array | undefined)[] | undefined;
}
/** A part handed over in a group: its reply is the group's `at`th. */
export interface GroupedReply {
  group: PartGroup;
  at: number;
}
/** How a host message's part is answered: by a shard of this thread, or in a group handed over. */
export type RoutedReply = PartReply | GroupedReply;

export function isGrouped(r: RoutedReply): r is GroupedReply {
  return r !== undefined && !(r instanceof Uint8Array) && !(r instanceof Promise);
}

/**
 * One host message's hand-offs: its parts for one other thread travel as one group under one id,
 * settled by one promise, not a call each. A batch's message carries a part for each shard it
 * touches, and several batches' messages (the worker's `hostRouting.lingerMs`) several parts for
 * the same shard: the per-part bookkeeping on both threads was the shard host's dearest cost.
 */
export class HandOffs {
  private readonly open = new Map<
    PartCalls,
    { group: PartGroup; add(tag: number, frame: Uint8Array): number }
  >();

  add(calls: PartCalls, tag: number, frame: Uint8Array): GroupedReply {
    let g = this.open.get(calls);
    if (!g) this.open.set(calls, (g = calls.group()));
    return { group: g.group, at: g.add(tag, frame) };
  }

  /** The groups handed over (each settles, never rejects). */
  groups(): PartGroup[] {
    return [...this.open.values()].map((g) => g.group);
  }
}

/**
 * The calling side of host-message parts handed to another thread (the host's thread to a shard
 * thread, one shard thread to another): each part gets an id, travels in the turn's packed batch,
 * and its promise settles when the reply batch comes back.
 */
export class PartCalls {
  private nextId = 1;
  private readonly waiting = new Map<number, Waiter>();
  private readonly outbox: PortBatch;

  constructor(send: (parts: PackedFrames) => void) {
    this.outbox = new PortBatch(send);
  }

  /** `frame` is copied now (it may be a view of a socket buffer that is reused after this turn). */
  call(tag: number, frame: Uint8Array): Promise<Uint8Array | undefined> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.outbox.add(id, tag, frame);
    });
  }

  /**
   * A group of parts under one id (HandOffs): its frames go out consecutively, in this turn's
   * batch, and the other side numbers its replies by their place in the run. Every part must be
   * added in the same synchronous span (the replies come back a turn later at the earliest).
   */
  group(): { group: PartGroup; add(tag: number, frame: Uint8Array): number } {
    const id = this.nextId++;
    const w: GroupWaiter = { n: 0, got: 0, out: [], resolve: () => undefined };
    const group: PartGroup = {
      done: new Promise<void>((resolve) => {
        w.resolve = () => {
          group.result = w.out;
          resolve();
        };
      }),
      result: undefined,
    };
    this.waiting.set(id, w);
    return {
      group,
      add: (tag, frame) => {
        this.outbox.add(id, tag, frame);
        w.out.push(undefined);
        return w.n++;
      },
    };
  }

  /** A batch of replies from the other side (a group's carry their place in its run as tag). */
  replies(parts: PackedFrames): void {
    unpackFrames(parts, (id, at, frame) => {
      const c = this.waiting.get(id);
      if (typeof c === 'function') {
        this.waiting.delete(id);
        c(frame);
      } else if (c) {
        c.out[at] = frame;
        if (++c.got === c.n) {
          this.waiting.delete(id);
          c.resolve();
        }
      }
    });
  }

  /** The other side is gone: what it had not answered was not served there (undefined). */
  fail(): void {
    this.outbox.drop();
    for (const c of this.waiting.values()) {
      if (typeof c === 'function') c(undefined);
      else c.resolve();
    }
    this.waiting.clear();
  }
}

type Waiter = ((frame: Uint8Array | undefined) => void) | GroupWaiter;
interface GroupWaiter {
  n: number;
  got: number;
  /** Replies by place; a part not answered stays undefined (not served there). */
  out: (Uint8Array | undefined)[];
  resolve(): void;
}

/**
 * The serving side: each part of a batch to `serve(tag, frame)`, its reply into `replies` under
 * the part's id and, for a group's parts (consecutive under one id), its place in the group. What
 * was answered at once goes back now, not a turn later.
 */
export function serveParts(
  parts: PackedFrames,
  serve: (tag: number, frame: Uint8Array) => PartReply,
  replies: PortBatch,
): void {
  let last = 0;
  let at = 0;
  unpackFrames(parts, (id, tag, frame) => {
    at = id === last ? at + 1 : 0;
    last = id;
    const place = at;
    const r = serve(tag, frame!);
    // a shard's handler never rejects (error envelopes): undefined only if it did anyway
    if (r instanceof Promise)
      void r.then(
        (f) => replies.add(id, place, f),
        () => replies.add(id, place, undefined),
      );
    else replies.add(id, place, r);
  });
  replies.flush();
}

/** A part's tag: its shard (a sid, or a shard's index between peers) and its kind. */
export function partTag(shard: number, kind: 'pull' | 'push'): number {
  return shard * 2 + (kind === 'push' ? 1 : 0);
}

/** The shard and kind of a part's tag. */
export function fromTag(tag: number): [shard: number, kind: 'pull' | 'push'] {
  return [tag >> 1, tag & 1 ? 'push' : 'pull'];
}
