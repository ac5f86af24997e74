import type { KV } from 'nats';
import { FreshetError, type Features } from '@freshet/protocol';
import { encodeManifest, manifestKey, type BatchManifest, type ManifestExample } from './batch-manifest.js';
import type { BatchTiming } from './batch-timing.js';
import type { Buffered, WorkerLog } from './message-holds.js';
import type { WorkerCounters } from './worker.js';

/** A batch's manifest in KV: its key, and the put in flight or the revision it was stored at. */
export interface ManifestHandle {
  key: string;
  partition: number;
  /** This worker's slot (absent for a recovered manifest of another owner). */
  slot?: number;
  bytes?: Uint8Array;
  put?: Promise<number> | undefined;
  revision?: number;
}

export interface ManifestStoreContext {
  enabled: boolean;
  worker: string;
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

  /** Starts storing a batch's manifest in a free slot of its partition (undefined when disabled). */
  write(items: Buffered[], id: string, eventTs: number | undefined): ManifestHandle | undefined {
    const first = items[0];
    if (!this.ctx.enabled || !this.ctx.kv() || !first) return undefined;
    const partition = first.partition;
    let used = this.slots.get(partition);
    if (!used) this.slots.set(partition, (used = new Set()));
    let slot = 0;
    while (used.has(slot) || this.recovering.has(manifestKey(partition, slot))) slot++;
    used.add(slot);
    const ex: ManifestExample[] = items.map((b) => {
      const s = b.deps.map((d) => d.seq);
      if (!b.joined) return { s };
      const e: ManifestExample = { s, l: b.example.label, f: b.example.features as Features };
      if (b.example.weight !== undefined) e.w = b.example.weight;
      if (b.example.ts !== undefined) e.t = b.example.ts;
      return e;
    });
    const m: BatchManifest = { v: 1, id, partition, worker: this.ctx.worker, ex };
    if (eventTs !== undefined) m.eventTs = eventTs;
    const h: ManifestHandle = {
      key: manifestKey(partition, slot),
      partition,
      slot,
      bytes: encodeManifest(m),
    };
    this.store(h);
    return h;
  }

  /** One KV put, in flight while the batch is encoded, pulled and computed. */
  store(h: ManifestHandle): void {
    const { counters, timing } = this.ctx;
    const t0 = performance.now();
    const put = this.ctx
      .kv()!
      .put(h.key, h.bytes!)
      .then(
        (rev) => {
          counters.manifestPuts++;
          timing.add('manifest', performance.now() - t0);
          h.revision = rev;
          return rev;
        },
        (e: unknown) => {
          counters.manifestFailures++;
          h.put = undefined; // the batch's retry stores it again
          throw new FreshetError('UNAVAILABLE', `batch manifest not stored: ${String(e)}`, { cause: e });
        },
      );
    // awaited before the first push; a batch that fails earlier must not leave it unhandled
    put.catch(() => undefined);
    h.put = put;
  }

  freeSlot(h: ManifestHandle | undefined): void {
    if (h?.slot !== undefined) this.slots.get(h.partition)?.delete(h.slot);
  }

  /**
   * Deletes a settled batch's manifest, only if it is still the value this batch stored (CAS on
   * its revision): the slot may already hold a newer batch's manifest.
   */
  drop(h: ManifestHandle | undefined): void {
    if (!h) return;
    this.freeSlot(h);
    const kv = this.ctx.kv()!;
    const del = (rev: number) =>
      kv.delete(h.key, { previousSeq: rev }).catch((e: unknown) => {
        this.ctx.log('info', 'manifest not deleted (replaced or gone)', { key: h.key, error: String(e) });
      });
    if (h.revision !== undefined) void del(h.revision);
    else if (h.put) void h.put.then(del, () => undefined);
  }
}
