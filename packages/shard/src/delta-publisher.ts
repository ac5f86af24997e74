import type { NatsConnection } from 'nats';
import { encodeDelta, type RowEncoding } from '@freshet/protocol';
import type { ShardCore } from './shard-core.js';
import { RecentTimings } from './staleness.js';
import type { Wal } from './wal.js';

/**
 * Publishes changed rows (values only) and tombstones every few milliseconds on the shard's
 * delta subject, seq consecutive from 1. A delta goes out only after everything it contains is
 * durable (its seq is logged behind the updates it carries and waited for), so serving never
 * sees a value that a crash could take back, and a restarted shard continues the sequence.
 */
export class DeltaPublisher {
  private timer: NodeJS.Timeout | undefined;
  private busy: Promise<void> | undefined;
  /** Last published seq. */
  seq: number;
  published = 0;
  errors = 0;
  /** takeDelta + encode + publish per message (the log wait excluded). */
  readonly timings = new RecentTimings();

  constructor(
    private readonly nc: NatsConnection,
    private readonly subject: string,
    private readonly shard: number,
    private readonly core: ShardCore,
    private readonly wal: Wal | undefined,
    private readonly intervalMs: number,
    private readonly maxBytes: number,
    startSeq: number,
    private readonly onError: (e: unknown) => void,
    /** Embedding rows' values as float32, binary16 (`halfDeltas`) or int8 (`int8Deltas`). */
    private readonly rowEncoding: RowEncoding = 'f32',
  ) {
    this.seq = startSeq;
  }

  start(): void {
    this.timer = setInterval(() => {
      if (!this.busy && this.core.hasChanges())
        this.busy = this.flush().finally(() => (this.busy = undefined));
    }, this.intervalMs);
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
        this.nc.publish(
          this.subject,
          encodeDelta({ shard: this.shard, seq, version, ts: Date.now(), eventTs, tables }),
        );
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
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.busy;
    await this.flush();
  }
}
