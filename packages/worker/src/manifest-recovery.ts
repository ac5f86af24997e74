import type { JetStreamManager, KV } from 'nats';
import type { Example } from '@freshet/model';
import type { EventDictionaries } from '@freshet/nats';
import {
  compileParseOptions,
  compressedEventDictionary,
  parseEvent,
  type CompiledParseOptions,
} from '@freshet/protocol';
import { decodeManifest, manifestFilter, type BatchManifest } from './batch-manifest.js';
import { agreeParts, pruneDecisions } from './manifest-decisions.js';
import { beginEpoch, ownedWhenStored, readEpochs, type EpochHistory } from './manifest-epochs.js';
import type { ManifestStore } from './manifest-store.js';
import type { Buffered, PartitionState, WorkerCounters, WorkerLog } from './worker-types.js';

/** Recovery reads events back that passed validation once: their age and skew no longer matter. */
const recoveryParseOptions = { maxSkewMs: Number.MAX_SAFE_INTEGER, maxAgeMs: Infinity };

/** A batch re-formed from a manifest: pushed under its original id, holding no messages. */
export interface Recovered {
  id: string;
  /** The copy this owner read: the partition being recovered, and its key. */
  partition: number;
  key: string;
  revision: number;
  eventTs: number | undefined;
}

export interface ManifestRecoveryContext {
  enabled: boolean;
  kv: () => KV | undefined;
  /**
   * The same bucket read from the stream leader: recovery decides on what it reads, and a
   * replica's direct get may lag (a copy listed by the leader reads as absent or older).
   */
  kvLeader: () => KV | undefined;
  /** This worker's incarnation tag, as its manifests carry it. */
  tag: string;
  /** The bucket's keys matching a filter, complete (`kvKeys` of @freshet/nats, not `kv.keys()`). */
  keys: (filter: string) => Promise<string[]>;
  jsm: () => JetStreamManager | undefined;
  feedbackStream: string;
  store: ManifestStore;
  parts: ReadonlyMap<number, PartitionState>;
  counters: WorkerCounters;
  signal: AbortSignal;
  log: WorkerLog;
  /** Trains and pushes a batch; false when it was handed back (the worker is stopping). */
  runBatch: (items: Buffered[], rec: Recovered) => Promise<boolean>;
  /** How long a recovered batch's redeliveries may still come (the AppliedSeqs `long` span). */
  holdMs: number;
  /** Compressed events' dictionaries: a recovered event's is fetched before it is parsed. */
  dictionaries?: EventDictionaries;
  /** Whether a worker (a manifest's writer) holds a live membership now. */
  isAlive: (worker: string) => boolean;
  /**
   * How long a live writer's missing manifest copies are waited for (its puts in flight and
   * retried) before the batch is taken to have been stored in part only.
   */
  settleMs: number;
}

/** Re-forms the batches an earlier owner of a partition left manifests for, and pushes them again. */
export class ManifestRecovery {
  /** When old recovery decisions were last pruned. */
  private prunedAt = -Infinity;
  private readonly parse: CompiledParseOptions;

  constructor(private readonly ctx: ManifestRecoveryContext) {
    this.parse = compileParseOptions({ ...recoveryParseOptions, dictionaries: ctx.dictionaries });
  }

  /**
   * Before fetching a newly leased partition: re-forms every batch a previous owner left a
   * manifest for and pushes it under its original id (shards that applied it answer
   * `duplicate`), then remembers its stream sequences so their redeliveries are acked, not
   * trained again. Fetching starts only after this, so no redelivered event of such a batch can
   * enter a different batch.
   */
  async recover(p: number, f: { stop: boolean }): Promise<void> {
    const kv = this.ctx.kvLeader();
    if (!this.ctx.enabled || !kv) return;
    const { counters, store, log } = this.ctx;
    // before listing: a copy that lands after this is not ours to recover (manifest-epochs.ts)
    const epochs = await this.untilDone(f, 'begin manifest epoch', () => beginEpoch(kv, p, this.ctx.tag));
    if (!epochs) return;
    const keys = await this.untilDone(f, 'list manifests', () => this.ctx.keys(manifestFilter(p)));
    if (!keys || keys.length === 0) return;
    keys.forEach((k) => store.recovering.add(k));
    const kept = new Set<string>();
    try {
      for (const key of keys) {
        if (f.stop) return;
        const entry = await this.untilDone(f, 'read manifest', () => kv.get(key));
        if (entry === undefined) return; // the partition is let go
        // gone since the listing (its batch settled and its worker dropped it): the next key
        if (entry === null || entry.operation !== 'PUT' || entry.length === 0) continue;
        let m: BatchManifest;
        try {
          m = decodeManifest(entry.value);
        } catch (e) {
          log('error', 'malformed batch manifest dropped', { key, error: String(e) });
          await kv.delete(key, { previousSeq: entry.revision }).catch(() => undefined);
          continue;
        }
        if (!ownedWhenStored(epochs, m.e, entry.revision)) {
          // its events were handed to (and trained by) an owner that never saw this copy
          if (m.e !== this.ctx.tag) {
            log('warn', 'batch manifest stored after its writer lost the partition: ignored', {
              partition: p,
              id: m.id,
              from: m.worker,
              examples: m.ex.length,
            });
            await kv.delete(key, { previousSeq: entry.revision }).catch(() => undefined);
          }
          continue;
        }
        const whole = await this.storedPart(p, m, f, key, entry.revision);
        if (whole === undefined) return;
        // settled by its live writer meanwhile, or left out of the batch's agreed parts
        if (whole === null) continue;
        m = whole;
        const items = await this.reform(p, m, f);
        if (!items) return;
        log('info', 'recovering batch from manifest', {
          partition: p,
          id: m.id,
          from: m.worker,
          examples: items.length,
        });
        const rec: Recovered = { id: m.id, partition: p, key, revision: entry.revision, eventTs: m.eventTs };
        const owned = this.ctx.parts.get(p);
        if (items.length === 0 || !(await this.ctx.runBatch(items, rec))) {
          if (items.length === 0)
            store.drop({ copies: [{ key, partition: p, revision: entry.revision }], stored: true });
          if (items.length > 0) return;
          continue;
        }
        counters.recoveredBatches++;
        counters.recoveredExamples += items.length;
        const ps = this.ctx.parts.get(p);
        // their redeliveries (if the earlier owner's acks never landed) are acked, not trained
        const now = Date.now();
        for (const ex of m.ex) for (const seq of ex.s) ps?.applied.awaitRedelivery(seq, now);
        kept.add(key);
        this.keep(p, owned, key, entry.revision);
      }
    } finally {
      keys.forEach((k) => {
        if (!kept.has(k)) store.recovering.delete(k);
      });
    }
  }

  /**
   * A recovered batch's copy stays in KV (and its slot unused) while the batch's events may still
   * be redelivered, since only this owner knows they are applied (its AppliedSeqs). Should the
   * partition move meanwhile, the next owner finds the copy, re-pushes it (every shard answers
   * `duplicate`) and acks the redeliveries itself. Dropped at once, the next owner would train
   * them again: the multi-host test saw it when a partition was handed over right after its
   * recovery.
   */
  private keep(p: number, owned: PartitionState | undefined, key: string, revision: number): void {
    const { store } = this.ctx;
    const t = setTimeout(() => {
      store.recovering.delete(key);
      const ps = this.ctx.parts.get(p);
      if (owned && ps === owned && !ps.closed && !this.ctx.signal.aborted) {
        store.drop({ copies: [{ key, partition: p, revision }], stored: true });
      }
    }, this.ctx.holdMs);
    t.unref();
  }

  /**
   * The part of a batch of several partitions whose manifest copies exist. A worker stores one
   * copy per partition, all before its first push; one that dies while storing them leaves only
   * some, and the batch was never pushed. The owners of the partitions without a copy train
   * those events when they are redelivered, so re-pushing the whole batch would apply them
   * twice: the batch is recovered without them, under its id. A batch that was pushed has every
   * copy until its acks are confirmed, and is then a duplicate whatever part of it is re-pushed.
   *
   * Recoverers do not all see the same copies (a late copy of a dead writer landing between two
   * of them, a copy dropped after its hold), and parts pushed under one id must be the same for
   * all: the first recoverer's view is stored as the batch's decision and every later one follows
   * it (manifest-decisions.ts); null when it leaves this partition out.
   *
   * The writer is not always dead: a worker whose lease lapsed while it lived (a stall past the
   * lease TTL, a KV outage; a graceful handover settles its batches first) may still be storing
   * the other copies of a batch in flight, and will push it whole.
   * Pushing part of it under its id first would make that whole push a duplicate and lose the
   * rest, so while the writer is a live member the missing copies are waited for (at most
   * `settleMs`), and a batch whose copy here disappears meanwhile was settled by its writer (null:
   * skip it). Undefined when the partition is let go meanwhile.
   */
  private async storedPart(
    p: number,
    m: BatchManifest,
    f: { stop: boolean },
    key: string,
    revision: number,
  ): Promise<BatchManifest | null | undefined> {
    const others = (m.partitions ?? []).filter((q) => q !== p);
    if (others.length === 0 || !m.ex.every((e) => e.p !== undefined)) return m;
    const kv = this.ctx.kvLeader()!;
    const deadline = Date.now() + this.ctx.settleMs;
    let present: Set<number>;
    for (;;) {
      present = new Set([p]);
      for (const q of others) {
        const has = await this.untilDone(f, 'list manifests', () => this.hasCopy(q, m.id));
        if (has === undefined) return undefined;
        if (has) present.add(q);
      }
      if (present.size === others.length + 1) break;
      if (!this.ctx.isAlive(m.worker) || Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, 100));
      const own = await this.untilDone(f, 'read manifest', () => kv.get(key));
      if (own === undefined) return undefined;
      if (own === null || own.operation !== 'PUT' || own.revision !== revision) return null;
    }
    const seen = [...present].sort((a, b) => a - b);
    const parts = await this.untilDone(f, 'agree on recovered parts', () => agreeParts(kv, m.id, seen));
    if (parts === undefined) return undefined;
    this.pruneLater(kv);
    if (!parts.includes(p)) {
      // an earlier recoverer saw no valid copy here: this partition's events are trained from
      // their redeliveries, so this copy must not apply them too
      this.ctx.log('warn', 'batch recovered without this partition: its copy is dropped', {
        id: m.id,
        partition: p,
        recovered: parts,
      });
      await kv.delete(key, { previousSeq: revision }).catch(() => undefined);
      return null;
    }
    if (parts.length === others.length + 1) return m;
    const ex = m.ex.filter((e) => parts.includes(e.p!));
    this.ctx.log('warn', 'batch manifest stored for some of its partitions only: recovering their part', {
      id: m.id,
      partitions: m.partitions,
      stored: parts,
      examples: ex.length,
      of: m.ex.length,
    });
    return { ...m, ex };
  }

  /** Old recovery decisions go (at most every 10 minutes), never blocking recovery. */
  private pruneLater(kv: KV): void {
    const now = Date.now();
    if (now - this.prunedAt < 600_000) return;
    this.prunedAt = now;
    const maxAgeMs = Math.max(3_600_000, 4 * this.ctx.holdMs);
    pruneDecisions(kv, this.ctx.keys, maxAgeMs).catch((e: unknown) =>
      this.ctx.log('info', 'old recovery decisions not pruned', { error: String(e) }),
    );
  }

  /**
   * Whether partition `q` holds a valid copy of the manifest of batch `id`: one stored while its
   * writer owned `q` (a late copy is ignored by `q`'s owner, so it is no copy here either).
   */
  private async hasCopy(q: number, id: string): Promise<boolean> {
    const kv = this.ctx.kvLeader()!;
    let epochs: EpochHistory | undefined;
    for (const k of await this.ctx.keys(manifestFilter(q))) {
      const e = await kv.get(k);
      if (!e || e.operation !== 'PUT' || e.length === 0) continue;
      let m: BatchManifest;
      try {
        m = decodeManifest(e.value);
      } catch {
        continue; // a malformed copy is its partition owner's to drop
      }
      if (m.id !== id) continue;
      epochs ??= await readEpochs(kv, q);
      return ownedWhenStored(epochs, m.e, e.revision);
    }
    return false;
  }

  /** The manifest's examples, rebuilt (pre-labelled ones read back from the stream by sequence). */
  private async reform(p: number, m: BatchManifest, f: { stop: boolean }): Promise<Buffered[] | undefined> {
    const out: Buffered[] = [];
    const now = Date.now();
    for (const ex of m.ex) {
      let example: Example | undefined;
      if (ex.f) {
        example = { features: ex.f, label: ex.l ?? 0 };
        if (ex.w !== undefined) example.weight = ex.w;
        if (ex.t !== undefined) example.ts = ex.t;
      } else if (ex.s[0] !== undefined) {
        const seq = ex.s[0];
        const got = await this.untilDone(f, 'read event', async () => {
          try {
            return await this.ctx.jsm()!.streams.getMessage(this.ctx.feedbackStream, { seq });
          } catch (e) {
            // gone from the stream (limits): nothing to rebuild it from
            if (/no message found|not found/i.test(String(e))) return null;
            throw e;
          }
        });
        if (got === undefined) return undefined;
        const dictionary = got ? compressedEventDictionary(got.data) : undefined;
        if (dictionary !== undefined && this.ctx.dictionaries) {
          const known = await this.untilDone(f, 'fetch event dictionary', async () => {
            if (await this.ctx.dictionaries!.fetch(dictionary)) return true;
            // unreachable bucket: try again; a dictionary the bucket lacks: unrecoverable below
            if (this.ctx.dictionaries!.pending(dictionary)) throw new Error('dictionary bucket unreachable');
            return false;
          });
          if (known === undefined) return undefined;
        }
        const r = got ? parseEvent(got.data, this.parse) : undefined;
        if (r?.ok && r.event.kind === 'example') {
          const ev = r.event;
          example = { features: ev.features, label: ev.label, weight: ev.weight, ts: ev.ts };
        }
      }
      if (!example) {
        this.ctx.counters.manifestsUnrecoverable++;
        this.ctx.log('error', 'manifest example cannot be rebuilt; left out', {
          partition: p,
          id: m.id,
          seqs: ex.s,
        });
        continue;
      }
      out.push({ partition: p, example, deps: [], key: '', joined: ex.f !== undefined, at: now });
    }
    return out;
  }

  /** Retries a KV/stream read until it succeeds or the partition is let go (then undefined). */
  private async untilDone<T>(
    f: { stop: boolean },
    what: string,
    fn: () => Promise<T>,
  ): Promise<T | undefined> {
    for (let attempt = 0; ; attempt++) {
      if (f.stop || this.ctx.signal.aborted) return undefined;
      try {
        return await fn();
      } catch (e) {
        this.ctx.log('warn', `${what} failed; retrying`, { error: String(e), attempt });
        await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** Math.min(attempt, 5))));
      }
    }
  }
}
