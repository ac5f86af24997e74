import type { Consumer } from 'nats';

/**
 * Each partition's consumer lag (`num_pending`) for the worker's status, read from JetStream at
 * most once per `maxAgeMs`. Every status request used to ask the server for every partition's
 * consumer info: a dashboard or a bench polling 25 times a second made 200 JetStream API calls a
 * second on an 8-partition worker, CPU taken from the server the events go through. Lag is a
 * gauge for humans and alerts, so a second's age costs nothing; concurrent requests share one
 * read.
 */
export class ConsumerLag {
  private lag: Record<string, number> = {};
  private at = -Infinity;
  private reading: Promise<void> | undefined;

  constructor(private readonly maxAgeMs = 1000) {}

  /** Lag per partition (best effort: a partition whose info failed is left out). */
  async read(
    partitions: readonly number[],
    consumerOf: (p: number) => Consumer | undefined,
  ): Promise<Record<string, number>> {
    if (performance.now() - this.at >= this.maxAgeMs) {
      this.reading ??= this.refresh(partitions, consumerOf).finally(() => (this.reading = undefined));
      await this.reading;
    }
    // partitions given up since the read are not reported
    const out: Record<string, number> = {};
    for (const p of partitions) if (this.lag[String(p)] !== undefined) out[String(p)] = this.lag[String(p)]!;
    return out;
  }

  private async refresh(partitions: readonly number[], consumerOf: (p: number) => Consumer | undefined) {
    const lag: Record<string, number> = {};
    await Promise.all(
      partitions.map(async (p) => {
        try {
          // fresh, not the cached info of start(): lag must move
          const info = await consumerOf(p)?.info();
          if (info) lag[String(p)] = info.num_pending;
        } catch {
          // lag is best effort
        }
      }),
    );
    this.lag = lag;
    this.at = performance.now();
  }
}
