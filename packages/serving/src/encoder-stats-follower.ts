import type { KvEntry, NatsConnection } from 'nats';
import type { ActorLog } from '@freshet/nats';
import { mergeRunningStats, type RunningStats } from '@freshet/model';
import { decodeEncoderStats, encoderStatsKeyPrefix, type EncoderStatsRecord } from '@freshet/protocol';
import { KvWatch } from './kv-watch.js';

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
  private readonly watch: KvWatch;
  view: EncoderStatsView = { workers: 0, examples: {} };

  constructor(
    nc: NatsConnection,
    private readonly o: EncoderStatsFollowerOptions,
  ) {
    this.watch = new KvWatch(nc, {
      cluster: o.cluster,
      key: `${encoderStatsKeyPrefix}.>`,
      what: 'encoder statistics',
      onEntry: (e) => this.onEntry(e),
      log: o.log,
    });
  }

  /** Starts following; meanwhile (no bucket yet) standardising is the identity. */
  start(retryMs = 2000): Promise<void> {
    return this.watch.start(retryMs);
  }

  stop(): Promise<void> {
    return this.watch.stop();
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
