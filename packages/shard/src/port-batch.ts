/**
 * Items posted to another thread in one message per event-loop turn (setImmediate: after the
 * turn's I/O callbacks, so every NATS message of a socket read is in it), their buffers moved,
 * not copied.
 */
export class PortBatch<T> {
  private items: T[] = [];
  private transfer: ArrayBuffer[] = [];
  private scheduled = false;

  constructor(private readonly send: (items: T[], transfer: ArrayBuffer[]) => void) {}

  add(item: T, buffer?: ArrayBuffer): void {
    this.items.push(item);
    if (buffer) this.transfer.push(buffer);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Posts what is waiting now (nothing if empty). */
  flush(): void {
    this.scheduled = false;
    if (this.items.length === 0) return;
    const items = this.items;
    const transfer = this.transfer;
    this.items = [];
    this.transfer = [];
    this.send(items, transfer);
  }

  /** Drops what is waiting (the other thread is gone); returns it. */
  drop(): T[] {
    const items = this.items;
    this.items = [];
    this.transfer = [];
    return items;
  }
}
