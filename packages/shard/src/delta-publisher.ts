import { encodeDelta, type RowEncoding } from '@freshet/protocol';
import type { ShardCore } from './shard-core.js';
import { RecentTimings } from './staleness.js';
import type { Wal } from './wal.js';

/** What a delta driver ticks: a shard's publisher, or a shard thread's stand-in for one. */
export interface Tickable {
  /** Publishes what changed since the last tick; resolves when it is out. */
  tick(): Promise<void>;
}

/** What ticks several publishers together (host-deltas.ts, thread-deltas.ts). */
export interface DeltaDriver {
  attach(p: Tickable, shard: number, intervalMs: number): void;
  /** Stops ticking `p`; resolves once what it published in the driver's ticks is on the bus. */
  detach(p: Tickable): Promise<void>;
}

/** A driver that also carries the frames: a shard publishes its deltas through `sink(shard)`. */
export interface DeltaSink extends DeltaDriver {
  sink(shard: number): (frame: Uint8Array) => void;
}

/**
 * Publishes changed rows (values only) and tombstones every few milliseconds on the shard's
 * delta subject, seq consecutive from 1. A delta goes out only after everything it contains is
 * durable (its seq is logged behind the updates it carries and waited for), so serving never
 * sees a value that a crash could take back, and a restarted shard continues the sequence.
 * `publish` puts a frame on the bus: on the shard's delta subject, or into its host's next host
 * delta (host-deltas.ts, which then drives {@link tick} instead of this publisher's own timer).
 */
export class DeltaPublisher implements Tickable {
  private timer: NodeJS.Timeout | undefined;
  private busy: Promise<void> | undefined;
  /** Last published seq. */
  seq: number;
  published = 0;
  errors = 0;
  /** takeDelta + encode + publish per message (the log wait excluded). */
  readonly timings = new RecentTimings();

  constructor(
    private readonly publish: (frame: Uint8Array) => void,
    private readonly shard: number,
    private readonly core: ShardCore,
    private readonly wal: Wal | undefined,
    private readonly intervalMs: number,
    private readonly maxBytes: number,
    startSeq: number,
    private readonly onError: (e: unknown) => void,
    /** Embedding rows' values as float32, binary16 (`halfDeltas`) or int8 (`int8Deltas`). */
    private readonly rowEncoding: RowEncoding = 'f32',
    /** Ticks it instead of its own timer (a shard host's host deltas). */
    private readonly driver?: DeltaDriver,
  ) {
    this.seq = startSeq;
  }

  /** Ticks on its own timer, or is ticked by its driver. */
  start(): void {
    if (this.driver) this.driver.attach(this, this.shard, this.intervalMs);
    else this.timer = setInterval(() => void this.tick(), this.intervalMs);
  }

  /** Flushes what changed unless a flush is running; resolves when this tick's deltas are out. */
  tick(): Promise<void> {
    if (this.busy || !this.core.hasChanges()) return Promise.resolve();
    return (this.busy = this.flush().finally(() => (this.busy = undefined)));
  }

  /** Publishes everything pending now (also used on stop). */
  async flush(): Promise<void> {
    // Bounded per call: a huge backlog goes out over several ticks instead of one long stall.
    for (let i = 0; i < 64 && this.core.hasChanges(); i++) {
      const t0 = performance.now();
      const { tables, eventTs } = this.core.takeDelta(this.maxBytes, this.rowEncoding);
      const version = this.core.version;
      const seq = this.seq + 1;
      let spent = performance.now() - t0;
      try {
        if (this.wal) await this.wal.append({ kind: 'seq', ts: Date.now(), seq });
        const t1 = performance.now();
        this.seq = seq;
        this.publish(encodeDelta({ shard: this.shard, seq, version, ts: Date.now(), eventTs, tables }));
        spent += performance.now() - t1;
        this.timings.record(spent);
        this.published++;
      } catch (e) {
        this.errors++;
        this.onError(e);
        return;
      }
    }
  }

  async stop(): Promise<void> {
    await this.driver?.detach(this);
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.busy;
    await this.flush();
  }
}
