import type { KV } from 'nats';
import { FreshetError, type Features } from '@freshet/protocol';
import { encodeManifest, manifestKey, type BatchManifest, type ManifestExample } from './batch-manifest.js';
import type { BatchTiming } from './batch-timing.js';
import type { Buffered, WorkerCounters, WorkerLog } from './worker-types.js';

/** One stored copy of a batch's manifest: a slot of one of the batch's partitions. */
export interface ManifestCopy {
  key: string;
  partition: number;
  /** This worker's slot (absent for a recovered manifest of another owner). */
  slot?: number;
  /** KV revision once stored. */
  revision?: number;
}

/**
 * A batch's manifest in KV. A batch may hold examples of several partitions; the same manifest
 * is then stored in a slot of each, so whichever worker owns any of them next finds it and
 * re-pushes the whole batch under its id (shards answer `duplicate` to the second re-push).
 */
export interface ManifestHandle {
  copies: ManifestCopy[];
  bytes?: Uint8Array;
  /** Every copy's put, in flight while the batch is encoded, pulled and computed. */
  put?: Promise<void> | undefined;
  /** Every copy is stored (always, for a recovered manifest). */
  stored: boolean;
}

export interface ManifestStoreContext {
  enabled: boolean;
  worker: string;
  /** This incarnation's tag (manifest-epochs.ts). */
  tag: string;
  kv: () => KV | undefined;
  counters: WorkerCounters;
  timing: BatchTiming;
  log: WorkerLog;
}

/** This worker's batch manifests in KV: a slot per batch in flight, stored before its first push. */
export class ManifestStore {
  /** Manifest slots in use per partition (keys `mf.<partition>.<slot>`). */
  private readonly slots = new Map<number, Set<number>>();
  /** Manifest keys of earlier owners being recovered now: no new batch may take those slots. */
  readonly recovering = new Set<string>();

  constructor(private readonly ctx: ManifestStoreContext) {}

  /**
   * Starts storing a batch's manifest in a free slot of each of its partitions (undefined when
   * manifests are disabled).
   */
  write(items: Buffered[], id: string, eventTs: number | undefined): ManifestHandle | undefined {
    const first = items[0];
    if (!this.ctx.enabled || !this.ctx.kv() || !first) return undefined;
    const partitions = [...new Set(items.map((b) => b.partition))].sort((a, b) => a - b);
    const copies = partitions.map((partition): ManifestCopy => {
      let used = this.slots.get(partition);
      if (!used) this.slots.set(partition, (used = new Set()));
      let slot = 0;
      while (used.has(slot) || this.recovering.has(manifestKey(partition, slot))) slot++;
      used.add(slot);
      return { key: manifestKey(partition, slot), partition, slot };
    });
    const mixed = partitions.length > 1;
    const ex: ManifestExample[] = items.map((b) => {
      const s = b.deps.map((d) => d.seq);
      const e: ManifestExample = mixed ? { s, p: b.partition } : { s };
      if (!b.joined) return e;
      e.l = b.example.label;
      e.f = b.example.features as Features;
      if (b.example.weight !== undefined) e.w = b.example.weight;
      if (b.example.ts !== undefined) e.t = b.example.ts;
      return e;
    });
    const m: BatchManifest = {
      v: 1,
      id,
      partition: first.partition,
      worker: this.ctx.worker,
      e: this.ctx.tag,
      ex,
    };
    if (partitions.length > 1) m.partitions = partitions;
    if (eventTs !== undefined) m.eventTs = eventTs;
    const h: ManifestHandle = { copies, bytes: encodeManifest(m), stored: false };
    this.store(h);
    return h;
  }

  /** One KV put per copy, in flight while the batch is encoded, pulled and computed. */
  store(h: ManifestHandle): void {
    const { counters, timing } = this.ctx;
    const t0 = performance.now();
    const kv = this.ctx.kv()!;
    const put = Promise.all(
      h.copies.map(async (c) => {
        if (c.revision !== undefined) return;
        c.revision = await kv.put(c.key, h.bytes!);
        counters.manifestPuts++;
      }),
    ).then(
      () => {
        timing.add('manifest', performance.now() - t0);
        h.stored = true;
      },
      (e: unknown) => {
        counters.manifestFailures++;
        h.put = undefined; // the batch's retry stores the missing copies again
        throw new FreshetError('UNAVAILABLE', `batch manifest not stored: ${String(e)}`, { cause: e });
      },
    );
    // awaited before the first push; a batch that fails earlier must not leave it unhandled
    put.catch(() => undefined);
    h.put = put;
  }

  freeSlot(h: ManifestHandle | undefined): void {
    for (const c of h?.copies ?? []) if (c.slot !== undefined) this.slots.get(c.partition)?.delete(c.slot);
  }

  /**
   * Deletes a settled batch's manifest, only if it is still the value this batch stored (CAS on
   * its revision): the slot may already hold a newer batch's manifest.
   */
  drop(h: ManifestHandle | undefined): void {
    if (!h) return;
    this.freeSlot(h);
    const kv = this.ctx.kv()!;
    const del = (c: ManifestCopy) =>
      c.revision !== undefined &&
      kv.delete(c.key, { previousSeq: c.revision }).catch((e: unknown) => {
        this.ctx.log('info', 'manifest not deleted (replaced or gone)', { key: c.key, error: String(e) });
      });
    // copies whose put is still in flight are deleted once it lands
    if (h.stored || !h.put) h.copies.forEach((c) => void del(c));
    else
      void h.put.then(
        () => h.copies.forEach((c) => void del(c)),
        () => h.copies.forEach((c) => void del(c)),
      );
  }
}
