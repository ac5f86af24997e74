import type { KV, KvEntry } from 'nats';
import { isConflict } from './kv-errors.js';

/**
 * Ownership epochs of a partition's manifest slots, so that a manifest copy stored after its
 * writer lost the partition is never recovered.
 *
 * Such late copies exist: a worker killed with manifest puts in its socket (a host cut off, then
 * back) has them delivered by the kernel once the link returns, long after the partition's next
 * owner listed the manifests and trained the events' redeliveries itself. Recovering that copy
 * later (at the next handover) would apply those events twice; recovering part of it while its
 * other copies are trained from redeliveries loses them (the multi-host test saw 49 of 2,400).
 *
 * Every owner appends an epoch to the partition's key `mfe.<p>` (compare-and-set) before it
 * lists the manifests; the epoch's KV revision orders it against the copies' revisions, which
 * the same stream numbers. A copy belongs to the epoch in force at its revision, and is valid
 * only when its writer (the worker's incarnation tag) owned that epoch. Copies without a tag
 * (older workers) and copies older than the kept history stay valid, as before.
 */

/** Epochs kept per partition (the current one and this many before it). */
const KEPT = 16;

interface Epoch {
  /** The owner's incarnation tag. */
  tag: string;
  /** KV revision of the write that began it. */
  rev: number;
}

/** A partition's epochs, newest first. */
export interface EpochHistory {
  epochs: Epoch[];
}

/** KV key of a partition's epochs. */
export function epochKey(partition: number): string {
  return `mfe.${partition}`;
}

function decode(e: KvEntry | null): { current?: Epoch; prev: Epoch[] } {
  if (!e || e.operation !== 'PUT' || e.length === 0) return { prev: [] };
  try {
    const v = JSON.parse(new TextDecoder().decode(e.value)) as { tag?: unknown; prev?: unknown };
    const prev = Array.isArray(v.prev)
      ? (v.prev as Epoch[]).filter((x) => typeof x?.tag === 'string' && Number.isInteger(x?.rev))
      : [];
    return typeof v.tag === 'string' ? { current: { tag: v.tag, rev: e.revision }, prev } : { prev };
  } catch {
    // unreadable: begin a new history
    return { prev: [] };
  }
}

/**
 * Begins `tag`'s epoch on partition `p`; resolves with the history including it. `kv` must read
 * from the stream leader (a replica's direct get may lag and lose the compare-and-set race
 * forever). Throws what KV throws (the caller retries).
 */
export async function beginEpoch(kv: KV, p: number, tag: string): Promise<EpochHistory> {
  const key = epochKey(p);
  for (;;) {
    const e = await kv.get(key);
    const { current, prev } = decode(e);
    const kept = current ? [current, ...prev].slice(0, KEPT - 1) : prev.slice(0, KEPT - 1);
    const value = new TextEncoder().encode(JSON.stringify({ tag, prev: kept }));
    let rev: number;
    try {
      rev = e ? await kv.update(key, value, e.revision) : await kv.create(key, value);
    } catch (err) {
      // another owner's epoch came first (a lease that changed hands meanwhile): read it again
      if (isConflict(err)) continue;
      throw err;
    }
    return { epochs: [{ tag, rev }, ...kept] };
  }
}

/** The partition's epochs as they are (read only). */
export async function readEpochs(kv: KV, p: number): Promise<EpochHistory> {
  const { current, prev } = decode(await kv.get(epochKey(p)));
  return { epochs: current ? [current, ...prev] : prev };
}

/**
 * Whether a copy stored at `revision` by incarnation `tag` belongs to an epoch its writer owned.
 * Untagged copies, and copies older than every kept epoch, are taken as valid.
 */
export function ownedWhenStored(h: EpochHistory, tag: string | undefined, revision: number): boolean {
  if (tag === undefined) return true;
  const inForce = h.epochs.find((x) => x.rev < revision);
  return inForce === undefined || inForce.tag === tag;
}
