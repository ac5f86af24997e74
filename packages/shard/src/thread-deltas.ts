import type { DeltaSink, Tickable } from './delta-publisher.js';

/** What a shard thread's deltas say to the host's thread (shard-thread-messages.ts carries them). */
export interface ThreadDeltasPort {
  attach(shard: number, intervalMs: number): void;
  /** Resolves once the host's host deltas no longer tick the shard and its last tick is out. */
  detach(shard: number): Promise<void>;
  /** A frame published outside the host's tick (a stopping shard's last delta). */
  publish(shard: number, frame: Uint8Array): void;
}

/**
 * A shard thread's side of its host's host deltas (shard host options `threads` and
 * `hostDeltas`): the host's thread keeps the one timer and sends one message per tick for all its
 * threads' shards. It asks each thread to tick the shards it runs; the frames published meanwhile
 * go back in the reply, into the host's message. A frame published outside a tick goes to the
 * host's thread too, which puts it on the bus behind the tick that may hold the shard's earlier
 * ones: one connection, so serving sees every shard's seqs in order.
 */
export class ThreadDeltas implements DeltaSink {
  private readonly byShard = new Map<number, Tickable>();
  private collecting: { shards: Set<number>; frames: { shard: number; frame: Uint8Array }[] } | undefined;

  constructor(private readonly port: ThreadDeltasPort) {}

  sink(shard: number): (frame: Uint8Array) => void {
    return (frame) => {
      const c = this.collecting;
      if (c?.shards.has(shard)) c.frames.push({ shard, frame });
      else this.port.publish(shard, frame);
    };
  }

  attach(p: Tickable, shard: number, intervalMs: number): void {
    this.byShard.set(shard, p);
    this.port.attach(shard, intervalMs);
  }

  async detach(p: Tickable): Promise<void> {
    for (const [shard, q] of this.byShard) {
      if (q !== p) continue;
      this.byShard.delete(shard);
      await this.port.detach(shard);
    }
  }

  /** The host's tick of `shards` (one at a time: the host waits for each before the next). */
  async tick(shards: readonly number[]): Promise<{ shard: number; frame: Uint8Array }[]> {
    const c = { shards: new Set(shards), frames: [] as { shard: number; frame: Uint8Array }[] };
    this.collecting = c;
    try {
      await Promise.all(
        shards.map((s) => {
          const p = this.byShard.get(s);
          // each publisher reports its own failures (its shard fails)
          return p ? p.tick().catch(() => undefined) : Promise.resolve();
        }),
      );
    } finally {
      this.collecting = undefined;
    }
    return c.frames;
  }
}
