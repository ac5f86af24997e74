import { PortBatch, unpackFrames, type PackedFrames } from './port-batch.js';

/** A part's reply: its shard's reply frame, or undefined (the shard does not run there). */
export type PartReply = Uint8Array | Promise<Uint8Array | undefined> | undefined;

/**
 * The calling side of host-message parts handed to another thread (the host's thread to a shard
 * thread, one shard thread to another): each part gets an id, travels in the turn's packed batch,
 * and its promise settles when the reply batch comes back.
 */
export class PartCalls {
  private nextId = 1;
  private readonly waiting = new Map<number, (frame: Uint8Array | undefined) => void>();
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

  /** A batch of replies from the other side. */
  replies(parts: PackedFrames): void {
    unpackFrames(parts, (id, _tag, frame) => {
      const c = this.waiting.get(id);
      this.waiting.delete(id);
      c?.(frame);
    });
  }

  /** The other side is gone: what it had not answered was not served there (undefined). */
  fail(): void {
    this.outbox.drop();
    for (const c of this.waiting.values()) c(undefined);
    this.waiting.clear();
  }
}

/**
 * The serving side: each part of a batch to `serve(tag, frame)`, its reply into `replies` under
 * the part's id. What was answered at once goes back now, not a turn later.
 */
export function serveParts(
  parts: PackedFrames,
  serve: (tag: number, frame: Uint8Array) => PartReply,
  replies: PortBatch,
): void {
  unpackFrames(parts, (id, tag, frame) => {
    const r = serve(tag, frame!);
    // a shard's handler never rejects (error envelopes): undefined only if it did anyway
    if (r instanceof Promise)
      void r.then(
        (f) => replies.add(id, 0, f),
        () => replies.add(id, 0, undefined),
      );
    else replies.add(id, 0, r);
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
