import type { KvEntry, NatsConnection, QueuedIterator } from 'nats';
import type { ActorLog } from '@freshet/nats';
import { subjects } from '@freshet/protocol';

export interface KvWatchOptions {
  cluster: string;
  /** Key or pattern in the cluster's KV bucket (`model-pin`, `encoder-stats.>`). */
  key: string;
  /** What it follows, for the log (`model pin`, `encoder statistics`). */
  what: string;
  onEntry: (e: KvEntry) => void;
  log: ActorLog;
}

/**
 * Follows keys of the cluster's KV bucket: the current value of each first, then every change.
 * Serving may start before the bucket exists (before `freshet init`): it then tries again every
 * `retryMs` and says so every 10 s, never failing the node.
 */
export class KvWatch {
  private iter: QueuedIterator<KvEntry> | undefined;
  private done: Promise<void> | undefined;
  private stopped = false;
  private retry: ReturnType<typeof setTimeout> | undefined;
  private lastWaitLog = -Infinity;

  constructor(
    private readonly nc: NatsConnection,
    private readonly o: KvWatchOptions,
  ) {}

  async start(retryMs = 2000): Promise<void> {
    const bucket = subjects(this.o.cluster).kvBucket;
    let iter: QueuedIterator<KvEntry>;
    try {
      const kv = await this.nc.jetstream().views.kv(bucket, { bindOnly: true });
      iter = await kv.watch({ key: this.o.key });
    } catch (e) {
      if (this.stopped) return;
      if (Date.now() - this.lastWaitLog >= 10_000) {
        this.lastWaitLog = Date.now();
        this.o.log(
          'warn',
          `${this.o.what} not followed yet (no KV bucket?): run \`freshet init --config FILE\``,
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
      for await (const e of iter) this.o.onEntry(e);
    })().catch((e: unknown) => this.o.log('warn', `${this.o.what} watch ended`, { error: String(e) }));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    this.iter?.stop();
    await this.done;
  }
}
