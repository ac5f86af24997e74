/** A packed batch of frames: per frame `[id, tag, offset, length]` in `meta` (length −1: none). */
export interface PackedFrames {
  meta: Int32Array<ArrayBuffer>;
  data: Uint8Array<ArrayBuffer>;
}

/** Frames start at multiples of 8 in the packed buffer, so typed-array views of them need no copy. */
const ALIGN = 8;

/**
 * Packs frames as they come: each is copied at once into one growing buffer (so a caller may hand
 * over a view of a buffer that is not its own past this turn), and {@link take} moves that buffer
 * out without another copy.
 */
export class FramePacker {
  private meta: number[] = [];
  private stage: Uint8Array<ArrayBuffer> | undefined;
  private used = 0;
  /** The last batch's size: the next stage starts there, so a steady stream rarely grows one. */
  private hint = 4096;

  get size(): number {
    return this.meta.length / 4;
  }

  add(id: number, tag: number, frame: Uint8Array | undefined): void {
    this.meta.push(id, tag, this.used, frame ? frame.byteLength : -1);
    if (!frame) return;
    const end = this.used + Math.ceil(frame.byteLength / ALIGN) * ALIGN;
    if (!this.stage || end > this.stage.byteLength) {
      const grown = new Uint8Array(Math.max(end, this.hint, 2 * (this.stage?.byteLength ?? 0)));
      if (this.stage) grown.set(this.stage.subarray(0, this.used));
      this.stage = grown;
    }
    this.stage.set(frame, this.used);
    this.used = end;
  }

  /** What was added since the last take (its buffer is the caller's to move). */
  take(): PackedFrames {
    const packed = {
      meta: Int32Array.from(this.meta),
      data: this.stage?.subarray(0, this.used) ?? new Uint8Array(0),
    };
    this.hint = Math.max(4096, this.used);
    this.drop();
    return packed;
  }

  /** Forgets what was added. */
  drop(): void {
    this.meta = [];
    this.stage = undefined;
    this.used = 0;
  }
}

/**
 * Frames posted to another thread in one message per event-loop turn (setImmediate: after the
 * turn's I/O callbacks, so every NATS message of a socket read is in it). They travel packed in
 * one buffer that is moved, not cloned: structured cloning costs per object, and a host's thread
 * would spend as much on a part's hand-off as on a NATS message.
 */
export class PortBatch {
  private readonly packer = new FramePacker();
  private scheduled = false;

  constructor(private readonly send: (packed: PackedFrames) => void) {}

  /** Queues `frame`, copied now: the caller's buffer may be reused after this turn. */
  add(id: number, tag: number, frame: Uint8Array | undefined): void {
    this.packer.add(id, tag, frame);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Posts what is waiting now (nothing if empty). */
  flush(): void {
    this.scheduled = false;
    if (this.packer.size > 0) this.send(this.packer.take());
  }

  /** Drops what is waiting (the other thread is gone). */
  drop(): void {
    this.packer.drop();
  }
}

/** Calls `each(id, tag, frame)` for every frame of a packed batch (frames are views, not copies). */
export function unpackFrames(
  p: PackedFrames,
  each: (id: number, tag: number, frame: Uint8Array | undefined) => void,
): void {
  const { meta, data } = p;
  for (let i = 0; i < meta.length; i += 4) {
    const len = meta[i + 3]!;
    each(meta[i]!, meta[i + 1]!, len < 0 ? undefined : data.subarray(meta[i + 2]!, meta[i + 2]! + len));
  }
}
