/** A packed batch of frames: per frame `[id, tag, offset, length]` in `meta` (length −1: none). */
export interface PackedFrames {
  meta: Int32Array<ArrayBuffer>;
  data: Uint8Array<ArrayBuffer>;
}

/** Frames start at multiples of 8 in the packed buffer, so typed-array views of them need no copy. */
const ALIGN = 8;

/**
 * Frames posted to another thread in one message per event-loop turn (setImmediate: after the
 * turn's I/O callbacks, so every NATS message of a socket read is in it). They travel packed in
 * one buffer that is moved, not cloned: structured cloning costs per object, and a host's thread
 * would spend as much on a part's hand-off as on a NATS message.
 */
export class PortBatch {
  private ids: number[] = [];
  private tags: number[] = [];
  private frames: (Uint8Array | undefined)[] = [];
  private bytes = 0;
  private scheduled = false;

  constructor(private readonly send: (packed: PackedFrames) => void) {}

  /** Queues `frame` (read at the flush: the caller hands over a frame nobody changes). */
  add(id: number, tag: number, frame: Uint8Array | undefined): void {
    this.ids.push(id);
    this.tags.push(tag);
    this.frames.push(frame);
    if (frame) this.bytes += frame.byteLength + ALIGN;
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Posts what is waiting now (nothing if empty). */
  flush(): void {
    this.scheduled = false;
    const n = this.ids.length;
    if (n === 0) return;
    const meta = new Int32Array(4 * n);
    const data = new Uint8Array(this.bytes);
    let off = 0;
    for (let i = 0; i < n; i++) {
      const f = this.frames[i];
      meta[4 * i] = this.ids[i]!;
      meta[4 * i + 1] = this.tags[i]!;
      meta[4 * i + 2] = off;
      meta[4 * i + 3] = f ? f.byteLength : -1;
      if (f) {
        data.set(f, off);
        off += Math.ceil(f.byteLength / ALIGN) * ALIGN;
      }
    }
    this.drop();
    this.send({ meta, data });
  }

  /** Drops what is waiting (the other thread is gone). */
  drop(): void {
    this.ids = [];
    this.tags = [];
    this.frames = [];
    this.bytes = 0;
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
