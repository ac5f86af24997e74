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
  private scheduled = false;

  constructor(private readonly send: (packed: PackedFrames) => void) {}

  /** Queues `frame` (read at the flush: the caller hands over a frame nobody changes). */
  add(id: number, tag: number, frame: Uint8Array | undefined): void {
    this.ids.push(id);
    this.tags.push(tag);
    this.frames.push(frame);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Posts what is waiting now (nothing if empty). */
  flush(): void {
    this.scheduled = false;
    if (this.ids.length === 0) return;
    const packed = packFrames(this.ids, this.tags, this.frames);
    this.drop();
    this.send(packed);
  }

  /** Drops what is waiting (the other thread is gone). */
  drop(): void {
    this.ids = [];
    this.tags = [];
    this.frames = [];
  }
}

/** `frames[i]` with its `ids[i]` and `tags[i]`, packed (see {@link PortBatch}). */
export function packFrames(
  ids: readonly number[],
  tags: readonly number[],
  frames: readonly (Uint8Array | undefined)[],
): PackedFrames {
  const n = ids.length;
  let bytes = 0;
  for (const f of frames) if (f) bytes += Math.ceil(f.byteLength / ALIGN) * ALIGN;
  const meta = new Int32Array(4 * n);
  const data = new Uint8Array(bytes);
  let off = 0;
  for (let i = 0; i < n; i++) {
    const f = frames[i];
    meta[4 * i] = ids[i]!;
    meta[4 * i + 1] = tags[i]!;
    meta[4 * i + 2] = off;
    meta[4 * i + 3] = f ? f.byteLength : -1;
    if (f) {
      data.set(f, off);
      off += Math.ceil(f.byteLength / ALIGN) * ALIGN;
    }
  }
  return { meta, data };
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
