import type { KvEntry, NatsConnection, QueuedIterator } from 'nats';
import type { ActorLog } from '@freshet/nats';
import { mergeRunningStats, type RunningStats } from '@freshet/model';
import {
  decodeEncoderStats,
  encoderStatsKeyPrefix,
  subjects,
  type EncoderStatsRecord,
} from '@freshet/protocol';

export interface EncoderStatsFollowerOptions {
  cluster: string;
  /** Records not rewritten for this long (a worker gone for good) are left out of the merge. */
  maxAgeMs: number;
  /** Gets the merged statistics whenever a record changes. */
  apply: (stats: Record<string, RunningStats>) => void;
  log: ActorLog;
}

/** What the follower merged last. */
export interface EncoderStatsView {
  /** Worker records merged. */
  workers: number;
  /** Examples behind each standardised column's statistics. */
  examples: Record<string, number>;
}

/**
 * Follows the workers' running statistics of standardised columns in the cluster's KV bucket
 * (`encoder-stats.<worker>`, written by each worker every couple of seconds) and hands their
 * merge to the scorer, so serving scales a numeric feature as training does. Until a record
 * arrives the statistics are empty and standardising is the identity.
 */
export class EncoderStatsFollower {
  private readonly records = new Map<string, EncoderStatsRecord>();
  private iter: QueuedIterator<KvEntry> | undefined;
  private done: Promise<void> | undefined;
  private stopped = false;
  private retry: ReturnType<typeof setTimeout> | undefined;
  private lastWaitLog = -Infinity;
  view: EncoderStatsView = { workers: 0, examples: {} };

  constructor(
    private readonly nc: NatsConnection,
    private readonly o: EncoderStatsFollowerOptions,
  ) {}

  /**
   * Starts following. Without the bucket yet (serving started before the cluster's streams) it
   * says so and tries again every `retryMs`; meanwhile standardising is the identity.
   */
  async start(retryMs = 2000): Promise<void> {
    const bucket = subjects(this.o.cluster).kvBucket;
    let iter: QueuedIterator<KvEntry>;
    try {
      const kv = await this.nc.jetstream().views.kv(bucket, { bindOnly: true });
      // the current value of every record first, then each change
      iter = await kv.watch({ key: `${encoderStatsKeyPrefix}.>` });
    } catch (e) {
      if (this.stopped) return;
      // retried every retryMs, said every 10 s: a node started before init would flood its log
      if (Date.now() - this.lastWaitLog >= 10_000) {
        this.lastWaitLog = Date.now();
        this.o.log(
          'warn',
          'encoder statistics not followed yet (no KV bucket?): run `freshet init --config FILE`',
          {
            bucket,
            error: String(e),
          },
        );
      }
      this.retry = setTimeout(() => void this.start(retryMs), retryMs);
      return;
    }
    if (this.stopped) {
      iter.stop();
      return;
    }
    this.iter = iter;
    this.done = (async () => {
      for await (const e of iter) this.onEntry(e);
    })().catch((e: unknown) => this.o.log('warn', 'encoder statistics watch ended', { error: String(e) }));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    this.iter?.stop();
    await this.done;
  }

  private onEntry(e: KvEntry): void {
    if (e.operation !== 'PUT') {
      this.records.delete(e.key);
    } else {
      try {
        this.records.set(e.key, decodeEncoderStats(e.value));
      } catch (err) {
        this.o.log('warn', 'bad encoder statistics record ignored', { key: e.key, error: String(err) });
        return;
      }
    }
    const since = Date.now() - this.o.maxAgeMs;
    const live = [...this.records.values()].filter((r) => r.at >= since);
    const merged = mergeRunningStats(live.map((r) => r.stats));
    this.view = {
      workers: live.length,
      examples: Object.fromEntries(Object.entries(merged).map(([k, s]) => [k, s.n])),
    };
    this.o.apply(merged);
  }
}
