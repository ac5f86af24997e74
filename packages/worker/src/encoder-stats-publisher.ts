import type { KV } from 'nats';
import type { FeatureEncoder } from '@freshet/model';
import { encodeEncoderStats, encoderStatsKey } from '@freshet/protocol';
import type { WorkerLog } from './worker-types.js';

const REWRITE_MS = 3600_000;

/**
 * Publishes this worker's running statistics of standardised numeric columns to the cluster's
 * KV bucket (`encoder-stats.<worker>`) every `everyMs` while they change (hourly when they do
 * not), and once more at stop.
 * Serving nodes merge every worker's record and standardise requests with it. Nothing runs for
 * a model without standardised columns.
 */
export class EncoderStatsPublisher {
  private timer: ReturnType<typeof setInterval> | undefined;
  private published = -1;
  private publishedAt = 0;
  private putting: Promise<void> | undefined;

  constructor(
    private readonly kv: KV,
    private readonly worker: string,
    private readonly encoder: FeatureEncoder,
    private readonly everyMs: number,
    private readonly log: WorkerLog,
  ) {}

  start(): void {
    if (this.encoder.standardised.length === 0) return;
    this.timer = setInterval(() => void this.publish(), this.everyMs);
  }

  async stop(): Promise<void> {
    if (this.timer === undefined) return;
    clearInterval(this.timer);
    this.timer = undefined;
    await this.putting;
    await this.publish();
  }

  /** One put, when the statistics moved since the last one (never two at once). */
  publish(): Promise<void> {
    if (this.putting) return this.putting;
    const stats = this.encoder.runningStats();
    let n = 0;
    for (const s of Object.values(stats)) n += s.n;
    // unchanged: rewritten hourly all the same, so serving never takes a live worker for gone
    if (n === this.published && Date.now() - this.publishedAt < REWRITE_MS) return Promise.resolve();
    const bytes = encodeEncoderStats({ v: 1, worker: this.worker, at: Date.now(), stats });
    this.putting = this.kv
      .put(encoderStatsKey(this.worker), bytes)
      .then(
        () => {
          this.published = n;
          this.publishedAt = Date.now();
        },
        (e: unknown) => this.log('warn', 'encoder stats not published; retrying', { error: String(e) }),
      )
      .finally(() => {
        this.putting = undefined;
      });
    return this.putting;
  }
}
