import type { JetStreamManager, KV, StoredMsg } from 'nats';
import { fmix32, hashString64 } from '@freshet/protocol';
import type { WorkerLog } from './worker-types.js';
import { isConflict, isMissing } from './kv-errors.js';

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
 * Losing a NATS node must not move partitions. What made them flap (issue 13: 10–53 moves per
 * 30 s for minutes after one of three nodes died):
 * - Reads were direct gets, which any replica answers: one lagging behind (a restarted node
 *   catching up) showed old revisions, so renewals failed their compare-and-set and the lease
 *   was dropped, and claimed again a tick later. Every read here goes to the stream leader.
 * - One renewal that timed out (no KV leader during the RAFT election, 4–9 s in nats-server 2.9)
 *   dropped the partition. An unanswered renewal now keeps the lease until it would expire; only
 *   a lease that another worker holds, or that is gone, is lost at once.
 * - While the KV had no leader nobody could heartbeat, so every member looked dead at once and
 *   the first worker back computed itself the owner of everything. A worker now judges others
 *   dead, or their leases expired, only after it has itself seen the bucket answer for a whole
 *   `ttlMs`: a blackout everyone shares moves nothing, a crashed worker is still replaced after
 *   `ttlMs` of observation.
 * - `ttlMs` shorter than an election fenced every owner during it; the default now outlives one.
 *
 * Expiry compares wall clocks of different processes: fine on one machine or NTP-synced hosts
 * with `ttlMs` well above the skew.
 */

export interface PartitionLeaseOptions {
  kv: KV;
  /** For leader reads of the bucket's stream (see the module comment). */
  jsm: JetStreamManager;
  /** The KV bucket's name (its stream is `KV_<bucket>`). */
  bucket: string;
  worker: string;
  partitions: number;
  heartbeatMs: number;
  ttlMs: number;
  log?: WorkerLog;
}

export interface PartitionLeaseHooks {
  /** This worker now owns `p`: start fetching. */
  acquired(p: number): void;
  /** This worker should hand `p` over: stop fetching; resolve once its in-flight work is acked. */
  release(p: number): Promise<void>;
  /** The lease was lost without a handover (expired, taken): stop fetching now. */
  lost(p: number): void;
}

/**
 * Why a lease was lost without a handover: `taken` (another worker holds it), `deleted` (its key
 * is gone), `expired` (not renewed for `ttlMs`: this worker fenced itself).
 */
export type LeaseLossReason = 'taken' | 'deleted' | 'expired';

/** Partition moves seen by one worker, cumulative (worker status `leases`). */
export interface LeaseCounters {
  /** Partitions taken up, the first ones included. */
  acquired: number;
  /** Of `acquired`: leases of another worker that had expired. */
  takenOver: number;
  /** Of `acquired`: this worker's own lease from a previous life, or after it fenced itself. */
  resumed: number;
  /** Partitions handed over gracefully to their new desired owner. */
  handedOver: number;
  /** Partitions lost without a handover, by reason. */
  lost: Record<LeaseLossReason, number>;
  /** Rounds the bucket did not answer (no KV leader, connection lost): nothing moved for them. */
  unansweredRounds: number;
}

interface Lease {
  owner: string;
  exp: number;
}

/** A key's last entry from the stream leader: `value` null when deleted or malformed. */
interface Read {
  revision: number;
  value: unknown;
}

const te = new TextEncoder();
const td = new TextDecoder();
const leaseKey = (p: number) => `worker.lease.${p}`;
const memberKey = (id: string) => `worker.member.${id}`;

function asLease(v: unknown): Lease | null {
  const l = v as Partial<Lease> | null;
  return l && typeof l.owner === 'string' && typeof l.exp === 'number'
    ? { owner: l.owner, exp: l.exp }
    : null;
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
  /** Per owned partition: its lease's revision and when the write that made it was sent. */
  private readonly held = new Map<number, { revision: number; sentAt: number }>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private stopped = false;
  /** Since when every round was answered; undefined while the bucket does not answer. */
  private answeredSince: number | undefined;
  private unansweredSince: number | undefined;
  private readonly stream: string;
  private readonly prefix: string;
  readonly counters: LeaseCounters = {
    acquired: 0,
    takenOver: 0,
    resumed: 0,
    handedOver: 0,
    lost: { taken: 0, deleted: 0, expired: 0 },
    unansweredRounds: 0,
  };
  /** Live members at the last round (for status). */
  members: string[] = [];

  constructor(
    private readonly o: PartitionLeaseOptions,
    private readonly hooks: PartitionLeaseHooks,
  ) {
    this.stream = `KV_${o.bucket}`;
    this.prefix = `$KV.${o.bucket}.`;
  }

  /** Partitions this worker holds (including ones being handed over). */
  get partitions(): number[] {
    return [...this.owned].sort((a, b) => a - b);
  }

  /**
   * Runs the first round (so ownership is known on return), then one every heartbeat. A round
   * still waiting on the bucket is not doubled; the expiry check runs every heartbeat anyway.
   */
  async start(): Promise<void> {
    await this.tick();
    this.timer = setInterval(() => {
      this.fence(Date.now());
      if (this.ticking || this.stopped) return;
      this.ticking = this.tick().finally(() => (this.ticking = undefined));
    }, this.o.heartbeatMs);
  }

  /** Runs one round now (tests and faster handover after a change). */
  async tick(): Promise<void> {
    if (this.stopped) return;
    const now = Date.now();
    this.fence(now);
    // Renewals first, on the revisions our own writes returned: one round trip, so a slow
    // round (a busy event loop, a slow leader) does not age the leases we hold.
    const renewals = new Map<number, Promise<'ok' | 'conflict' | 'unanswered'>>();
    for (const [p, h] of this.held) renewals.set(p, this.renew(p, h.revision, now));
    let view: { members: Map<string, number>; leases: Map<number, Read> };
    try {
      await this.o.kv.put(
        memberKey(this.o.worker),
        te.encode(JSON.stringify({ id: this.o.worker, exp: now + this.o.ttlMs })),
      );
      view = await this.read();
    } catch (e) {
      await Promise.all(renewals.values());
      this.unanswered(now, e);
      return;
    }
    if (this.answeredSince === undefined) {
      if (this.unansweredSince !== undefined) {
        this.log('info', 'lease bucket answers again', { afterMs: now - this.unansweredSince });
      }
      this.answeredSince = now;
      this.unansweredSince = undefined;
    }
    // Seen the bucket answer for a whole ttl: a lapsed heartbeat or lease now means its writer
    // could not renew while we could, not that nobody could.
    const settled = now - this.answeredSince >= this.o.ttlMs;
    const live = new Set<string>([this.o.worker]);
    for (const [id, exp] of view.members) if (exp > now) live.add(id);
    if (!settled) for (const m of this.members) live.add(m);
    this.members = [...live].sort();
    await Promise.all(
      Array.from({ length: this.o.partitions }, async (_, p) =>
        this.round(p, view.leases.get(p), now, settled, await renewals.get(p)),
      ),
    );
  }

  private unanswered(now: number, e: unknown): void {
    this.counters.unansweredRounds++;
    if (this.answeredSince !== undefined || this.unansweredSince === undefined) {
      this.unansweredSince = now;
      this.log('warn', 'lease bucket does not answer: holding leases until they would expire', {
        error: String(e),
        partitions: this.partitions,
      });
    }
    this.answeredSince = undefined;
  }

  /**
   * Drops every lease not renewed within `ttlMs`: by then another worker may take it (it needs
   * the lease expired on its clock, and a round of its own after that).
   */
  private fence(now: number): void {
    for (const p of [...this.owned]) {
      const h = this.held.get(p);
      if (h && now - h.sentAt > this.o.ttlMs) {
        this.drop(p, 'expired', { unrenewedMs: now - h.sentAt });
      }
    }
  }

  /** Members' heartbeats and the partitions' leases, read from the stream leader. */
  private async read(): Promise<{ members: Map<string, number>; leases: Map<number, Read> }> {
    const info = await this.o.jsm.streams.info(this.stream, { subjects_filter: `${this.prefix}worker.>` });
    const subjectsSeen = Object.keys(info.state.subjects ?? {});
    const members = new Map<string, number>();
    const leases = new Map<number, Read>();
    await Promise.all(
      subjectsSeen.map(async (subject) => {
        const key = subject.slice(this.prefix.length);
        const r = await this.get(key);
        if (key.startsWith('worker.member.')) {
          const v = r?.value as { id?: unknown; exp?: unknown } | null | undefined;
          // a malformed member entry is ignored, not fatal
          if (v && typeof v.id === 'string' && typeof v.exp === 'number') members.set(v.id, v.exp);
        } else if (key.startsWith('worker.lease.') && r) {
          const p = Number(key.slice('worker.lease.'.length));
          if (Number.isInteger(p) && p >= 0 && p < this.o.partitions) leases.set(p, r);
        }
      }),
    );
    return { members, leases };
  }

  /** A key's last entry from the stream leader (never a lagging replica); undefined if never written. */
  private async get(key: string): Promise<Read | undefined> {
    let m: StoredMsg;
    try {
      m = await this.o.jsm.streams.getMessage(this.stream, { last_by_subj: this.prefix + key });
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
    const op = m.header?.get('KV-Operation');
    if (op === 'DEL' || op === 'PURGE') return { revision: m.seq, value: null };
    try {
      return { revision: m.seq, value: JSON.parse(td.decode(m.data)) as unknown };
    } catch {
      return { revision: m.seq, value: null };
    }
  }

  private value(now: number): Uint8Array {
    return te.encode(JSON.stringify({ owner: this.o.worker, exp: now + this.o.ttlMs }));
  }

  private async round(
    p: number,
    read: Read | undefined,
    now: number,
    settled: boolean,
    renewal: 'ok' | 'conflict' | 'unanswered' | undefined,
  ): Promise<void> {
    const { worker } = this.o;
    const lease = asLease(read?.value ?? null);
    const want = desiredOwner(this.members, p) === worker;

    if (this.owned.has(p)) {
      if (lease?.owner !== worker) {
        if (this.releasing.has(p)) return; // our handover deleted it; its end is counted there
        this.drop(p, lease ? 'taken' : 'deleted', lease ? { owner: lease.owner } : {});
        return;
      }
      // a write of ours we never heard back from moved the revision: renew on the leader's
      if (renewal === 'conflict' || (renewal === undefined && !this.held.has(p))) {
        await this.renew(p, read!.revision, now);
      }
      if (this.owned.has(p) && !want && !this.releasing.has(p)) this.handOver(p);
      return;
    }
    if (this.releasing.has(p)) return;
    if (!want) {
      // ours from a previous life (or from before we fenced ourselves): free it for its owner
      if (lease?.owner === worker && read) {
        await this.o.kv.delete(leaseKey(p), { previousSeq: read.revision }).catch(() => undefined);
      }
      return;
    }
    let reason: 'free' | 'expired' | 'resumed' = 'free';
    if (lease?.owner === worker) reason = 'resumed';
    else if (lease) {
      // held by a live worker that will hand it over; or expired, and we have watched long
      // enough to know its owner could have renewed it
      if (lease.exp > now || !settled) return;
      reason = 'expired';
    }
    try {
      const revision = read
        ? await this.o.kv.update(leaseKey(p), this.value(now), read.revision)
        : await this.o.kv.create(leaseKey(p), this.value(now));
      this.held.set(p, { revision, sentAt: now });
    } catch {
      return; // someone else won the race, or no answer: the next round sees which
    }
    this.owned.add(p);
    this.counters.acquired++;
    if (reason === 'expired') {
      this.counters.takenOver++;
      this.log('warn', 'partition lease taken over', {
        partition: p,
        from: lease!.owner,
        expiredMsAgo: now - lease!.exp,
      });
    } else if (reason === 'resumed') {
      this.counters.resumed++;
      this.log('info', 'partition lease resumed', { partition: p });
    }
    this.hooks.acquired(p);
  }

  /**
   * Compare-and-set on the lease's last known revision. A conflict means a write we did not
   * see the answer of (ours that timed out, or a taker's): the round's leader read decides. No
   * answer keeps the lease until it would expire (fence).
   */
  private async renew(p: number, revision: number, now: number): Promise<'ok' | 'conflict' | 'unanswered'> {
    try {
      const next = await this.o.kv.update(leaseKey(p), this.value(now), revision);
      if (this.owned.has(p)) this.held.set(p, { revision: next, sentAt: now });
      return 'ok';
    } catch (e) {
      return isConflict(e) ? 'conflict' : 'unanswered';
    }
  }

  private handOver(p: number): void {
    this.releasing.add(p);
    void this.hooks
      .release(p)
      .then(() => this.deleteLease(p))
      .catch(() => undefined)
      .finally(() => {
        this.releasing.delete(p);
        if (this.owned.delete(p)) this.counters.handedOver++;
        this.held.delete(p);
      });
  }

  private drop(p: number, reason: LeaseLossReason, fields: Record<string, unknown>): void {
    if (!this.owned.delete(p)) return;
    this.held.delete(p);
    this.counters.lost[reason]++;
    this.log('warn', 'partition lease lost', { partition: p, reason, ...fields });
    this.hooks.lost(p);
  }

  private async deleteLease(p: number): Promise<void> {
    const r = await this.get(leaseKey(p));
    if (!r || asLease(r.value)?.owner !== this.o.worker) return;
    await this.o.kv.delete(leaseKey(p), { previousSeq: r.revision });
  }

  private log(level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>): void {
    this.o.log?.(level, msg, fields);
  }

  /**
   * Stops heartbeating, then gives up every lease and the membership (call after the worker's
   * in-flight work for these partitions is acked or handed back).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.ticking?.catch(() => undefined);
    for (const p of [...this.owned]) {
      await this.deleteLease(p).catch(() => undefined);
      this.owned.delete(p);
      this.held.delete(p);
    }
    await this.o.kv.delete(memberKey(this.o.worker)).catch(() => undefined);
  }
}
