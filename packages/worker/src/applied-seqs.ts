/**
 * Stream sequences of one partition whose examples are applied while a redelivery of them may
 * still come: a redelivery of one is acked on arrival, never trained again.
 *
 * - confirming: our ack is on its way; the leader has not answered yet.
 * - recent: confirmed within the last ack wait (+ 10 s). The server may have redelivered the
 *   message just before our ack reached it, or lost the ack it answered (nats-server answers an
 *   ack before its RAFT commit; a consumer leader that dies then forgets it) and redeliver it
 *   after the ack wait. Memory: one entry per applied event of that span (~13 MB at 5k/s).
 * - long: an earlier owner's batch recovered from its manifest (that owner's acks may never have
 *   landed), or an ack we gave up confirming: the redelivery is due within an ack wait.
 *
 * Both maps are pruned from their oldest entry (each is filled with one retention, so insertion
 * order is forget order).
 */
export class AppliedSeqs {
  private readonly confirming = new Set<number>();
  private readonly recent = new Map<number, number>();
  private readonly long = new Map<number, number>();

  constructor(
    /** How long a confirmed sequence is remembered for a redelivery already sent. */
    private readonly recentMs: number,
    /** How long a recovered or unconfirmed sequence is remembered (a few ack waits). */
    private readonly longMs: number,
  ) {}

  has(seq: number): boolean {
    return this.confirming.has(seq) || this.recent.has(seq) || this.long.has(seq);
  }

  get size(): number {
    return this.confirming.size + this.recent.size + this.long.size;
  }

  acking(seq: number): void {
    this.confirming.add(seq);
  }

  confirmed(seq: number, now: number): void {
    this.confirming.delete(seq);
    this.recent.delete(seq);
    this.recent.set(seq, now + this.recentMs);
  }

  /** An ack never confirmed, or a sequence a recovered batch applied. */
  awaitRedelivery(seq: number, now: number): void {
    this.confirming.delete(seq);
    this.long.delete(seq);
    this.long.set(seq, now + this.longMs);
  }

  prune(now: number): void {
    for (const m of [this.recent, this.long]) {
      for (const [seq, at] of m) {
        if (at > now) break;
        m.delete(seq);
      }
    }
  }
}
