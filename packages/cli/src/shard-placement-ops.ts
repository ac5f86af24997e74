import type { NatsConnection } from 'nats';
import {
  hostNameError,
  placementKv,
  planPlacement,
  readLease,
  readPlacement,
  releaseLease,
  writePlacement,
  type Lease,
  type Placement,
} from '@freshet/nats';
import { FreshetError, shardStatusSubject } from '@freshet/protocol';

/**
 * Which shard host runs which shard (docs/resharding.md), as operations on a cluster: place (a
 * new placement, compare-and-set on the KV revision, epoch + 1, spreading the shards evenly over
 * the hosts named and moving as few as it can), move one shard, free a lost host's lease, and
 * show where each shard runs. `place` and `move` wait until every moved shard runs where the
 * placement says and answers. `freshet shard place|move|release|placement` and `freshet init`
 * call them.
 */

export interface PlaceOptions {
  hosts: string[];
  /** The cluster's shard count; needed for the first placement only (then fixed). */
  shards?: number;
  /** Also wait until every moved shard runs and answers (default true). */
  wait?: boolean;
  timeoutMs?: number;
  log?: (line: string) => void;
}

export interface PlaceReport {
  epoch: number;
  shards: number;
  hosts: string[];
  moved: Array<{ shard: number; from: string | null; to: string }>;
  /** When each moved shard answered on its new host (ms after the placement was written). */
  settledMs: Record<string, number>;
  ms: number;
}

export interface ShardWhere {
  shard: number;
  host: string;
  lease: Lease | null;
  /** The shard answered a status request (it runs somewhere). */
  answers: boolean;
  version: number | null;
}

async function answers(
  nc: NatsConnection,
  cluster: string,
  shard: number,
): Promise<{ version: number } | null> {
  try {
    const r = await nc.request(shardStatusSubject(cluster, shard), new Uint8Array(), { timeout: 1000 });
    return JSON.parse(new TextDecoder().decode(r.data)) as { version: number };
  } catch {
    return null;
  }
}

/** Writes the placement of `o.hosts` and (by default) waits until it holds. */
export async function placeShards(
  nc: NatsConnection,
  cluster: string,
  o: PlaceOptions,
): Promise<PlaceReport> {
  const t0 = Date.now();
  const kv = await placementKv(nc, cluster);
  const cur = await readPlacement(kv);
  const shards = cur?.value.hosts.length ?? o.shards;
  if (shards === undefined) {
    throw new FreshetError(
      'BAD_REQUEST',
      `cluster ${cluster} has no shard placement yet: the first one needs --shards N (the shard count workers and serving use)`,
    );
  }
  if (o.shards !== undefined && o.shards !== shards) {
    throw new FreshetError(
      'BAD_REQUEST',
      `cluster ${cluster} has ${shards} shards; the count is fixed (a placement moves shards between hosts)`,
    );
  }
  const hosts = planPlacement(cur?.value, shards, o.hosts);
  const moved = hosts.flatMap((to, shard) => {
    const from = cur?.value.hosts[shard] ?? null;
    return from === to ? [] : [{ shard, from, to }];
  });
  const next: Placement = { epoch: (cur?.value.epoch ?? 0) + 1, hosts, at: Date.now() };
  if (moved.length === 0 && cur) {
    return { epoch: cur.value.epoch, shards, hosts, moved, settledMs: {}, ms: 0 };
  }
  await writePlacement(kv, next, cur?.revision ?? 0);
  o.log?.(`placement epoch ${next.epoch}: ${moved.length} shard(s) to move`);
  const settledMs =
    o.wait === false
      ? {}
      : await waitSettled(
          nc,
          cluster,
          kv,
          next,
          moved.map((m) => m.shard),
          t0,
          o,
        );
  return { epoch: next.epoch, shards, hosts, moved, settledMs, ms: Date.now() - t0 };
}

/**
 * Waits until each of `shards` is held by the host `p` puts it on and answers there. On timeout,
 * says for each shard still moving who holds its lease, and which host to check.
 */
async function waitSettled(
  nc: NatsConnection,
  cluster: string,
  kv: Awaited<ReturnType<typeof placementKv>>,
  p: Placement,
  shards: number[],
  t0: number,
  o: { timeoutMs?: number; log?: (line: string) => void },
): Promise<Record<string, number>> {
  const timeoutMs = o.timeoutMs ?? 120_000;
  const settledMs: Record<string, number> = {};
  const pending = new Set(shards);
  for (;;) {
    for (const shard of [...pending]) {
      const lease = await readLease(kv, shard);
      if (lease?.value.holder !== p.hosts[shard]) continue;
      if (!(await answers(nc, cluster, shard))) continue;
      pending.delete(shard);
      settledMs[String(shard)] = Date.now() - t0;
      o.log?.(`shard ${shard} runs on ${p.hosts[shard]} (${Date.now() - t0} ms)`);
    }
    if (!pending.size) return settledMs;
    if (Date.now() - t0 > timeoutMs) {
      const where = await Promise.all(
        [...pending].map(
          async (s) =>
            `shard ${s}: lease ${(await readLease(kv, s))?.value.holder ?? 'free'}, wanted on ${p.hosts[s]}`,
        ),
      );
      const hosts = [...new Set([...pending].map((s) => p.hosts[s]))].join(', ');
      throw new FreshetError(
        'TIMEOUT',
        `placement epoch ${p.epoch} written, not settled after ${timeoutMs} ms (${where.join('; ')}): ` +
          `is a shard host named ${hosts} running? (\`freshet shard placement\` shows where each shard is)`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Moves one shard to `to` (a placement with that one change) and, by default, waits for it. */
export async function moveShard(
  nc: NatsConnection,
  cluster: string,
  shard: number,
  to: string,
  o: Omit<PlaceOptions, 'hosts' | 'shards'> = {},
): Promise<PlaceReport> {
  const t0 = Date.now();
  const bad = hostNameError(to);
  if (bad) throw new FreshetError('BAD_REQUEST', bad);
  const kv = await placementKv(nc, cluster);
  const cur = await readPlacement(kv);
  if (!cur)
    throw new FreshetError(
      'BAD_REQUEST',
      `cluster ${cluster} has no shard placement: run \`freshet shard place\` first`,
    );
  const shards = cur.value.hosts.length;
  if (!Number.isInteger(shard) || shard < 0 || shard >= shards) {
    throw new FreshetError('BAD_REQUEST', `shard ${shard}: cluster ${cluster} has shards 0-${shards - 1}`);
  }
  const from = cur.value.hosts[shard]!;
  if (from === to)
    return { epoch: cur.value.epoch, shards, hosts: cur.value.hosts, moved: [], settledMs: {}, ms: 0 };
  const hosts = cur.value.hosts.map((h, i) => (i === shard ? to : h));
  const next: Placement = { epoch: cur.value.epoch + 1, hosts, at: Date.now() };
  await writePlacement(kv, next, cur.revision);
  o.log?.(`placement epoch ${next.epoch}: shard ${shard} ${from} → ${to}`);
  const settledMs = o.wait === false ? {} : await waitSettled(nc, cluster, kv, next, [shard], t0, o);
  return { epoch: next.epoch, shards, hosts, moved: [{ shard, from, to }], settledMs, ms: Date.now() - t0 };
}

/**
 * Frees the lease of a shard whose host is gone for good (its volume lost), so the shard's next
 * host restores it from the Object Store: the newest checkpoint and the log segments mirrored
 * after it. What its log held after the last mirrored segment (up to `walSegmentMs`) is lost,
 * which is why this is never automatic. Refused while the shard answers (its host runs: move it).
 */
export async function forceReleaseShard(
  nc: NatsConnection,
  cluster: string,
  shard: number,
): Promise<{ shard: number; holder: string | null }> {
  const kv = await placementKv(nc, cluster);
  const lease = await readLease(kv, shard);
  const holder = lease?.value.holder ?? null;
  if (holder === null) return { shard, holder };
  if (await answers(nc, cluster, shard)) {
    throw new FreshetError(
      'BAD_REQUEST',
      `shard ${shard} answers (host ${holder} runs it): move it with \`freshet shard move\` instead`,
    );
  }
  const p = await readPlacement(kv);
  await releaseLease(kv, shard, holder, p?.value.epoch ?? lease!.value.epoch);
  return { shard, holder };
}

/** Where every shard is placed, who holds its lease, and whether it answers. */
export async function shardPlacement(
  nc: NatsConnection,
  cluster: string,
): Promise<{ epoch: number; shards: ShardWhere[] } | null> {
  const kv = await placementKv(nc, cluster);
  const p = await readPlacement(kv);
  if (!p) return null;
  const shards = await Promise.all(
    p.value.hosts.map(async (host, shard) => {
      const [lease, st] = await Promise.all([readLease(kv, shard), answers(nc, cluster, shard)]);
      return { shard, host, lease: lease?.value ?? null, answers: st !== null, version: st?.version ?? null };
    }),
  );
  return { epoch: p.value.epoch, shards };
}
