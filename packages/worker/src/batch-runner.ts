import type { Model } from '@freshet/model';
import { FreshetError, gradientProblem, hashString64, hasCode } from '@freshet/protocol';
import type { BatchTiming } from './batch-timing.js';
import type { ComputePool } from './compute-pool.js';
import type { DenseReplica } from './dense-replica.js';
import type { LrSchedule } from './lr-schedule.js';
import type { ManifestHandle, ManifestStore } from './manifest-store.js';
import type { ModelGuard } from './model-guard.js';
import type { Recovered } from './manifest-recovery.js';
import { labelKnownAt, type MessageHolds } from './message-holds.js';
import type { ProgressiveMetrics } from './progressive.js';
import type { ShardClient } from './shard-client.js';
import type { WorkerOptions } from './worker-options.js';
import type { Buffered, WorkerCounters, WorkerLog } from './worker-types.js';

const scratch = new Uint32Array(2);
const hex = (n: number) => n.toString(16).padStart(8, '0');

export interface BatchRunnerContext {
  options: WorkerOptions;
  counters: WorkerCounters;
  timing: BatchTiming;
  metrics: ProgressiveMetrics;
  lr: LrSchedule;
  /** The model guard (docs/model-versions.md), fed the same losses as the lr schedule. */
  guard?: ModelGuard;
  holds: MessageHolds;
  manifests: ManifestStore;
  /** What start() creates: there once a batch can run. */
  model: () => Model | undefined;
  client: () => ShardClient | undefined;
  pool: () => ComputePool | undefined;
  /** The dense tables' replica when `dense.mode` is `replica`. */
  dense: () => DenseReplica | undefined;
  /** Still running (a failed batch is retried), or stopping (it is handed back). */
  running: () => boolean;
  log: WorkerLog;
}

/** Runs batches: pull rows, compute gradients, push them until every shard accepted, then ack. */
export class BatchRunner {
  /** Batches applied (the clock the shards see). */
  clock = 0;
  /** Examples applied, by time (examples per second over the last 10 s). */
  readonly rate: { t: number; n: number }[] = [];

  constructor(private readonly ctx: BatchRunnerContext) {}

  /**
   * Stable across redeliveries of the same events: shards dedupe a re-push of the same batch.
   * Keys name each example by the stream sequences of its messages and its label, so a joined
   * example re-derived from the same impression and click has the same key.
   */
  private pushId(items: Buffered[]): string {
    hashString64(items.map((b) => b.key).join(','), scratch);
    return `${hex(scratch[0]!)}${hex(scratch[1]!)}n${items.length}`;
  }

  /**
   * Trains one batch and pushes it until every shard accepted it; then acks its events. Resolves
   * true once settled, false when it was handed back (the worker is stopping). `pushSent` is
   * called once, right after the first push's requests went out on the connection: a pull
   * sent after that reaches every shard behind them (`overlapPush`).
   */
  async run(items: Buffered[], rec?: Recovered, pushSent?: () => void): Promise<boolean> {
    const { options: o, counters, timing, holds, manifests } = this.ctx;
    const msgs = [...new Set(items.flatMap((b) => b.deps))];
    const model = this.ctx.model()!;
    const client = this.ctx.client()!;
    const pool = this.ctx.pool()!;
    const replica = this.ctx.dense();
    const examples = items.map((b) => b.example);
    const onRetry = () => {
      counters.retries++;
      // keep the events ours while we retry (resets their ack-wait timer)
      const now = Date.now();
      for (const t of msgs) {
        t.msg.working();
        t.since = now;
      }
    };
    let eventTs: number | undefined = rec?.eventTs;
    if (!rec) {
      let min = Number.POSITIVE_INFINITY;
      for (const b of items) min = Math.min(min, labelKnownAt(b));
      eventTs = Number.isFinite(min) ? min : undefined;
    }
    const id = rec?.id ?? this.pushId(items);
    const manifest: ManifestHandle | undefined = rec
      ? { copies: [{ key: rec.key, partition: rec.partition, revision: rec.revision }], stored: true }
      : manifests.write(items, id, eventTs);
    let pending: Set<number> | undefined;
    let denseGrads: readonly (Float32Array | undefined)[] | undefined;
    // a recovered batch was scored by the owner that formed it
    let scored = rec !== undefined;
    const t0 = performance.now();
    const ms = { encode: 0, pull: 0, compute: 0, push: 0 };
    let t = t0;
    const lap = (stage: keyof typeof ms) => {
      const now = performance.now();
      ms[stage] += now - t;
      t = now;
    };
    for (let attempt = 0; ; attempt++) {
      try {
        for (let round = 0; ; round++) {
          t = performance.now();
          const batch = model.encode(examples);
          const labels = batch.labels.slice();
          const weights = batch.weights.slice();
          // a replica's dense tables are read here and flushed on their own (dense-replica.ts)
          const plan = client.route(replica ? { ...batch, denseTables: [] } : batch);
          pending ??= new Set(plan.parts.map((x) => x.shard));
          lap('encode');
          const pulled = await client.pull(plan, { clock: this.clock, onRetry });
          if (replica) {
            await replica.load(onRetry);
            for (const t of batch.denseTables) pulled.rows[t] = replica.rows(t).slice();
          }
          lap('pull');
          let r: Awaited<ReturnType<ComputePool['gradients']>> | undefined;
          // The compute thread refuses to return a non-finite loss or gradient (NON_FINITE);
          // the same batch would fail the same way forever, so it is never retried.
          let bad: string | undefined;
          for (let busy = 0; ; busy++) {
            try {
              r = await pool.gradients(batch, pulled.rows, pulled.shared);
              break;
            } catch (e) {
              if (hasCode(e, 'NON_FINITE')) {
                bad = (e as Error).message;
                break;
              }
              if (!hasCode(e, 'OVERLOADED') || busy > 20) throw e;
              await new Promise((res) => setTimeout(res, 10 * (busy + 1)));
            }
          }
          lap('compute');
          if (r && !scored) {
            scored = true;
            const loss = this.ctx.metrics.add(r.preds, labels, weights);
            this.ctx.lr.observe(loss, labels.length);
            this.ctx.guard?.observe(loss, labels.length);
          }
          if (r && bad === undefined) {
            for (const g of r.grads) {
              const problem = g && gradientProblem(g);
              if (problem) bad = `${problem === 'NON_FINITE' ? 'non-finite' : 'overflowing'} gradient`;
              if (bad) break;
            }
          }
          if (!r || bad !== undefined) {
            // Dead-lettered whole (its events can be replayed once the cause is fixed): a shard
            // would reject it (NON_FINITE, GRAD_OVERFLOW) and the same events give the same
            // gradients again. Nothing of it was pushed.
            counters.nonFiniteBatches++;
            for (const m of msgs) {
              holds.deadLetter(m, 'NON_FINITE_GRADIENT', `${bad ?? 'no gradient'}: update not applied`);
            }
            this.ctx.log('warn', 'batch with a non-finite or overflowing gradient dead-lettered', {
              error: bad,
              events: msgs.length,
            });
            void holds.settleBatch(items, 'discarded').then(() => manifests.drop(manifest));
            return true;
          }
          if (manifest && !manifest.stored) {
            // The manifest must be stored before any shard can accept the batch.
            const w0 = performance.now();
            if (!manifest.put) manifests.store(manifest);
            await manifest.put;
            timing.add('manifestWait', performance.now() - w0);
            t = performance.now();
          }
          const pushed = client.push(plan, pulled, r.grads, {
            id,
            clock: this.clock,
            eventTs,
            lrScale: this.ctx.lr.scale(),
            examples: labels.length,
            only: pending,
            onRetry,
          });
          pushSent?.();
          const out = await pushed;
          lap('push');
          denseGrads = r.grads;
          counters.pushes += out.accepted.size;
          counters.pushDuplicates += out.duplicates;
          counters.maxStaleness = Math.max(counters.maxStaleness, out.maxStaleness);
          for (const s of out.accepted) pending.delete(s);
          if (pending.size === 0) break;
          counters.staleRounds++;
          if (round >= o.retry.staleRounds) {
            throw new FreshetError(
              'STALE',
              `shards ${[...pending].join(',')} rejected ${round + 1} rounds as stale`,
            );
          }
        }
        // The dense update: applied to the replica now, acked once a flush carried it to the
        // shard. A recovered batch goes alone, under its own id (its owner may have flushed it).
        let flushed: Promise<void> | undefined;
        if (replica && denseGrads) {
          const scale = this.ctx.lr.scale();
          if (rec) await replica.addAlone(id, denseGrads, scale, examples.length);
          else flushed = replica.add(id, denseGrads, scale, examples.length);
        }
        this.clock++;
        this.rate.push({ t: Date.now(), n: items.length });
        // Dropped once the acks are confirmed: a crash (or a lost ack) before then leaves a
        // manifest whose batch every shard has, so the next owner's re-push is all duplicates
        // and it acks the redeliveries instead of training them.
        // A recovered batch's manifest copy is kept until its events' redeliveries are due: the
        // recovery drops it then, or leaves it for the partition's next owner (manifest-recovery.ts).
        const settle = () =>
          holds.settleBatch(items, 'applied').then(() => {
            if (!rec) manifests.drop(manifest);
          });
        if (!flushed) void settle();
        else {
          void flushed.then(settle, () => {
            // never flushed (the worker stopped): not applied everywhere, so never acked
            void holds.settleBatch(items, 'handBack');
            manifests.freeSlot(manifest);
          });
        }
        timing.add('encode', ms.encode);
        timing.add('pull', ms.pull);
        timing.add('compute', ms.compute);
        timing.add('push', ms.push);
        timing.add('total', performance.now() - t0);
        return true;
      } catch (e) {
        const state = hasCode(e, 'NON_FINITE_STATE');
        if (state || hasCode(e, 'NON_FINITE') || hasCode(e, 'GRAD_OVERFLOW')) {
          // A shard refused the gradients themselves (e.g. a `dc` compensation overflowed), or
          // what they would do to its state (NON_FINITE_STATE: it rolled the push back): the same
          // batch would be refused forever. Shards that accepted it keep it (each shard applies
          // a push whole or not at all); its events are dead-lettered, not retried, and the
          // partition moves on.
          counters.nonFiniteBatches++;
          const reason = state ? 'NON_FINITE_STATE' : 'NON_FINITE_GRADIENT';
          for (const m of msgs) holds.deadLetter(m, reason, `a shard refused it: ${String(e)}`);
          this.ctx.log('warn', 'batch refused by a shard for its gradients; dead-lettered', {
            error: String(e),
            reason,
            events: msgs.length,
          });
          void holds.settleBatch(items, 'discarded').then(() => manifests.drop(manifest));
          return true;
        }
        counters.failedBatches++;
        const running = this.ctx.running();
        this.ctx.log('warn', running ? 'batch failed; retrying it whole' : 'batch handed back', {
          error: String(e),
          code: e instanceof FreshetError ? e.code : 'INTERNAL',
          events: msgs.length,
          attempt,
          pendingShards: pending ? [...pending] : [],
        });
        if (!running) {
          // Not applied everywhere and we are stopping: never ack; hand the events back. The
          // manifest stays: the partition's next owner re-pushes exactly this batch first.
          void holds.settleBatch(items, 'handBack');
          manifests.freeSlot(manifest);
          return false;
        }

        // The same batch again (same id, same shards still pending): the shards that accepted
        // it answer `duplicate`, so nothing is applied twice. Re-forming it from redelivered
        // events could not promise that, and joined examples cannot be re-derived by this worker.
        onRetry();
        await new Promise((res) =>
          setTimeout(res, Math.min(o.retry.maxMs, o.consumer.nakDelayMs * (attempt + 1))),
        );
      }
    }
  }
}
