import type { NatsConnection } from 'nats';
import { encodeHostDelta, subjects } from '@freshet/protocol';
import type { DeltaSink, Tickable } from './delta-publisher.js';

/**
 * Host deltas (shard option `hostDeltas`, docs/architecture.md): the shards of one shard host
 * publish their deltas on one timer, and what they publish in a tick leaves as one message on
 * `hdelta.<host>`, so a serving node receives a message per host per tick, not per shard. Each
 * part is the shard's own delta frame with its own seq: serving checks gaps and resyncs per shard
 * as before. A tick with one part publishes it on the shard's own subject, and so does a stopping
 * shard's last delta, once the tick that may hold its earlier ones is out. With `servingSlices`
 * each slice's parts leave as their own message (the same rules per slice).
 */
export class HostDeltas implements DeltaSink {
  /** Publisher → its shard and interval. */
  private readonly attached = new Map<Tickable, { shard: number; intervalMs: number }>();
  private collecting: { shard: number; frame: Uint8Array }[] | undefined;
  private timer: NodeJS.Timeout | undefined;
  private intervalMs = 0;
  private busy: Promise<void> | undefined;
  private readonly subj;
  /** Host delta messages sent, the shard deltas they carried, ticks whose publish failed. */
  readonly counters = { messages: 0, parts: 0, errors: 0 };

  constructor(
    private readonly nc: NatsConnection,
    cluster: string,
    private readonly host: string,
    /** A host delta's size bound: a tick's parts beyond it go in further messages, in order. */
    private readonly maxBytes: number,
    /**
     * The serving tier's slice count (shard option `servingSlices`): above 1 a tick leaves as one
     * message per slice, on `hdelta.<host>.<slices>.<index>`, so a sliced serving node receives
     * its own shards' parts only.
     */
    private readonly slices = 1,
  ) {
    this.subj = subjects(cluster);
  }

  /** The `publish` of shard `shard`'s delta publisher. */
  sink(shard: number): (frame: Uint8Array) => void {
    return (frame) => {
      // into the tick being collected while the shard is ticked here, or behind its frames there
      const c = this.collecting;
      if (c && (this.ticked(shard) || c.some((p) => p.shard === shard))) c.push({ shard, frame });
      else this.nc.publish(this.subj.delta(shard), frame);
    };
  }

  private ticked(shard: number): boolean {
    for (const a of this.attached.values()) if (a.shard === shard) return true;
    return false;
  }

  /** Ticks at the shortest interval of the attached publishers. */
  attach(p: Tickable, shard: number, intervalMs: number): void {
    this.attached.set(p, { shard, intervalMs });
    const want = Math.min(...[...this.attached.values()].map((a) => a.intervalMs));
    if (this.timer && want === this.intervalMs) return;
    if (this.timer) clearInterval(this.timer);
    this.intervalMs = want;
    this.timer = setInterval(() => this.tick(), want);
  }

  /**
   * A stopping shard: untick it, and resolve once the tick in progress (which may hold its
   * deltas) is on the bus, so its last delta follows them on its own subject before it hands off.
   */
  async detach(p: Tickable): Promise<void> {
    this.attached.delete(p);
    if (this.attached.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
    await this.busy;
  }

  /** Stops ticking once the tick in progress is out. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.busy;
  }

  private tick(): void {
    if (this.busy) return;
    const collected: { shard: number; frame: Uint8Array }[] = [];
    this.collecting = collected;
    this.busy = Promise.all([...this.attached.keys()].map((p) => p.tick()))
      .then(
        () => undefined,
        () => undefined, // each publisher reports its own failures (its shard fails)
      )
      .finally(() => {
        this.collecting = undefined;
        try {
          this.send(collected);
        } catch {
          // the connection is closing: a serving node sees the gap in the seqs and resyncs
          this.counters.errors++;
        }
        this.busy = undefined;
      });
  }

  private send(parts: { shard: number; frame: Uint8Array }[]): void {
    if (this.slices === 1) {
      this.sendOn(this.subj.hostDelta(this.host), parts);
      return;
    }
    // by slice, each shard's parts in the order published: one shard is in one slice, so its
    // seqs stay in order on the bus whichever group carries them
    const groups = new Map<number, typeof parts>();
    for (const p of parts) {
      const i = p.shard % this.slices;
      const g = groups.get(i);
      if (g) g.push(p);
      else groups.set(i, [p]);
    }
    for (const [i, g] of groups) this.sendOn(this.subj.hostDeltaSlice(this.host, this.slices, i), g);
  }

  /** `parts` on `subject` in messages of at most `maxBytes`; a lone part on its shard's subject. */
  private sendOn(subject: string, parts: { shard: number; frame: Uint8Array }[]): void {
    let chunk: typeof parts = [];
    let bytes = 0;
    const out = () => {
      if (chunk.length === 1) this.nc.publish(this.subj.delta(chunk[0]!.shard), chunk[0]!.frame);
      else if (chunk.length > 1) {
        this.nc.publish(subject, encodeHostDelta(chunk));
        this.counters.messages++;
        this.counters.parts += chunk.length;
      }
      chunk = [];
      bytes = 0;
    };
    // room for the host message's own header under the server's limit
    const cap = Math.min(this.maxBytes, (this.nc.info?.max_payload ?? Infinity) - 64 * 1024);
    for (const p of parts) {
      if (chunk.length > 0 && bytes + p.frame.byteLength > cap) out();
      chunk.push(p);
      bytes += p.frame.byteLength;
    }
    out();
  }
}
