import type { KV, KvEntry } from 'nats';
import { fmix32, hashString64 } from '@freshet/protocol';

/**
 * Partition ownership through leases in the cluster's JetStream KV bucket.
 *
 * Each partition has one durable consumer; a worker pulls from it only while it holds the
 * partition's lease (`worker.lease.<p>` = {owner, exp}). Workers heartbeat a membership key
 * (`worker.member.<id>`) and compute the desired owner of each partition by rendezvous hashing
 * over the live members, so a join or leave moves only the partitions it must.
 *
 * - Claims and renewals are compare-and-set on the key's revision: two workers never both win.
 * - A worker that is no longer the desired owner stops fetching, lets its in-flight batches
 *   finish (they ack), and only then deletes the lease: the next owner starts after the last ack
 *   of the previous one, so a graceful move neither loses nor double-applies events.
 * - A crashed worker's lease expires after `ttlMs`; its unacked events are redelivered by
 *   JetStream to the next owner after the consumer's ack wait.
 * - A worker that cannot renew (cut off from NATS) for `ttlMs` drops its partitions itself.
 *
 * Expiry compares wall clocks of different processes: fine on one machine or NTP-synced hosts
 * with `ttlMs` well above the skew.
 */

export interface PartitionLeaseOptions {
  kv: KV;
  worker: string;
  partitions: number;
  heartbeatMs: number;
  ttlMs: number;
}

export interface PartitionLeaseHooks {
  /** This worker now owns `p`: start fetching. */
  acquired(p: number): void;
  /** This worker should hand `p` over: stop fetching; resolve once its in-flight work is acked. */
  release(p: number): Promise<void>;
  /** The lease was lost without a handover (expired, taken): stop fetching now. */
  lost(p: number): void;
}

interface Lease {
  owner: string;
  exp: number;
}

const te = new TextEncoder();
const td = new TextDecoder();
const leaseKey = (p: number) => `worker.lease.${p}`;
const memberKey = (id: string) => `worker.member.${id}`;

function parseLease(e: KvEntry | null): Lease | null {
  if (!e || e.operation !== 'PUT') return null;
  try {
    const v = JSON.parse(td.decode(e.value)) as Partial<Lease>;
    return typeof v.owner === 'string' && typeof v.exp === 'number' ? { owner: v.owner, exp: v.exp } : null;
  } catch {
    return null;
  }
}

const scratch = new Uint32Array(2);
/** Rendezvous (highest random weight) owner of a partition among `members`. */
export function desiredOwner(members: readonly string[], p: number): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  for (const m of members) {
    hashString64(m, scratch);
    const score = fmix32((scratch[0]! ^ fmix32((p + 0x9e3779b9) >>> 0)) >>> 0);
    if (score > bestScore || (score === bestScore && best !== undefined && m < best)) {
      best = m;
      bestScore = score;
    }
  }
  return best;
}

/** Keeps this worker's share of the partitions leased; see the module comment. */
export class PartitionLeases {
  private readonly owned = new Set<number>();
  private readonly releasing = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private stopped = false;
  private lastRenewOk = Date.now();
  /** Live members at the last tick (for status). */
  members: string[] = [];

  constructor(
    private readonly o: PartitionLeaseOptions,
    private readonly hooks: PartitionLeaseHooks,
  ) {}

  /** Partitions this worker holds (including ones being handed over). */
  get partitions(): number[] {
    return [...this.owned].sort((a, b) => a - b);
  }

  /** Runs the first round (so ownership is known on return), then one every heartbeat. */
  async start(): Promise<void> {
    await this.tick();
    const loop = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        this.ticking = this.tick().finally(loop);
      }, this.o.heartbeatMs);
    };
    loop();
  }

  /** Runs one round now (tests and faster handover after a change). */
  async tick(): Promise<void> {
    if (this.stopped) return;
    const now = Date.now();
    const { kv, worker } = this.o;
    try {
      await kv.put(memberKey(worker), te.encode(JSON.stringify({ id: worker, exp: now + this.o.ttlMs })));
      this.members = await this.liveMembers(now);
      if (!this.members.includes(worker)) this.members.push(worker);
      this.members.sort();
      for (let p = 0; p < this.o.partitions; p++) {
        if (this.stopped) return;
        await this.round(p, now);
      }
      this.lastRenewOk = now;
    } catch {
      // NATS unreachable: keep what we hold until the lease would have expired, then fence ourselves
      if (Date.now() - this.lastRenewOk > this.o.ttlMs) {
        for (const p of [...this.owned]) this.drop(p);
      }
    }
  }

  private async round(p: number, now: number): Promise<void> {
    const { kv, worker } = this.o;
    const key = leaseKey(p);
    const entry = await kv.get(key);
    const lease = parseLease(entry);
    const mine = lease?.owner === worker;
    const want = desiredOwner(this.members, p) === worker;
    const value = te.encode(JSON.stringify({ owner: worker, exp: now + this.o.ttlMs }));

    if (mine && entry) {
      if (this.owned.has(p) || this.releasing.has(p)) {
        try {
          await kv.update(key, value, entry.revision);
        } catch {
          this.drop(p);
          return;
        }
      } else {
        // a lease of ours from a previous life of this id: take it up again
        this.owned.add(p);
        this.hooks.acquired(p);
      }
      if (!want && !this.releasing.has(p)) this.handOver(p);
      return;
    }
    if (this.owned.has(p)) {
      this.drop(p); // taken over or expired under us
      return;
    }
    if (!want || this.releasing.has(p)) return;
    if (lease && lease.exp > now) return; // held by a live worker that will hand it over
    try {
      if (entry && entry.operation === 'PUT') await kv.update(key, value, entry.revision);
      else await kv.create(key, value);
    } catch {
      return; // someone else won the race
    }
    this.owned.add(p);
    this.hooks.acquired(p);
  }

  private handOver(p: number): void {
    this.releasing.add(p);
    void this.hooks
      .release(p)
      .then(() => this.deleteLease(p))
      .catch(() => undefined)
      .finally(() => {
        this.releasing.delete(p);
        this.owned.delete(p);
      });
  }

  private drop(p: number): void {
    if (!this.owned.delete(p)) return;
    this.hooks.lost(p);
  }

  private async deleteLease(p: number): Promise<void> {
    const e = await this.o.kv.get(leaseKey(p));
    if (parseLease(e)?.owner !== this.o.worker || !e) return;
    await this.o.kv.delete(leaseKey(p), { previousSeq: e.revision });
  }

  private async liveMembers(now: number): Promise<string[]> {
    const keys: string[] = [];
    for await (const k of await this.o.kv.keys('worker.member.*')) keys.push(k);
    const out: string[] = [];
    for (const k of keys) {
      const e = await this.o.kv.get(k);
      if (!e || e.operation !== 'PUT') continue;
      try {
        const v = JSON.parse(td.decode(e.value)) as { id?: unknown; exp?: unknown };
        if (typeof v.id === 'string' && typeof v.exp === 'number' && v.exp > now) out.push(v.id);
      } catch {
        // a malformed member entry is ignored, not fatal
      }
    }
    return out;
  }

  /**
   * Stops heartbeating, then gives up every lease and the membership (call after the worker's
   * in-flight work for these partitions is acked or handed back).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.ticking?.catch(() => undefined);
    for (const p of [...this.owned]) {
      await this.deleteLease(p).catch(() => undefined);
      this.owned.delete(p);
    }
    await this.o.kv.delete(memberKey(this.o.worker)).catch(() => undefined);
  }
}
