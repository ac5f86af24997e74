import type { KV, NatsConnection } from 'nats';
import { z } from 'zod';
import { FreshetError, subjects } from '@freshet/protocol';

/**
 * Where each shard runs, in the cluster's KV bucket (docs/resharding.md). A cluster has a fixed
 * number of shards (the key space: `shardOfKey(…, shards)`, fixed at init); shard hosts
 * (`freshet shard-host`) are processes that run some of them. The placement maps every shard
 * index to a host and carries an epoch that grows with every change; a lease per shard says which
 * host holds it now, so a shard never runs on two hosts: the old host writes its final checkpoint
 * to the Object Store and releases the lease before the new one takes it and restores from there.
 */
export const placementKey = 'shard-placement';
export const leaseKey = (shard: number) => `shard-lease.${shard}`;

const hostName = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, 'a host name is 1-64 letters, digits, - or _ (a KV key token)');

export const placementSchema = z
  .object({
    epoch: z.number().int().nonnegative(),
    /** hosts[i] runs shard i */
    hosts: z.array(hostName).min(1),
    at: z.number().int().nonnegative(),
  })
  .strict();
export type Placement = z.infer<typeof placementSchema>;

export const leaseSchema = z
  .object({
    /** the host running the shard; null once released (its final checkpoint is in the Object Store) */
    holder: hostName.nullable(),
    /** the host that held it last (the holder while held): only its data dir is current */
    last: hostName,
    /** the placement epoch under which it was last taken or released */
    epoch: z.number().int().nonnegative(),
    at: z.number().int().nonnegative(),
  })
  .strict();
export type Lease = z.infer<typeof leaseSchema>;

export interface Stored<T> {
  value: T;
  revision: number;
}

export function hostNameError(name: string): string | undefined {
  const r = hostName.safeParse(name);
  return r.success ? undefined : `host ${JSON.stringify(name)}: ${r.error.issues[0]?.message ?? 'invalid'}`;
}

/** The cluster's KV bucket, which `freshet init` (or a role's first start) created. */
export async function placementKv(nc: NatsConnection, cluster: string): Promise<KV> {
  return nc.jetstream().views.kv(subjects(cluster).kvBucket, { bindOnly: true });
}

async function readJson<T>(kv: KV, key: string, schema: z.ZodType<T>): Promise<Stored<T> | undefined> {
  const e = await kv.get(key);
  if (!e || e.operation !== 'PUT' || e.value.length === 0) return undefined;
  try {
    return { value: schema.parse(JSON.parse(e.string())), revision: e.revision };
  } catch (err) {
    throw new FreshetError('CONFIG', `${key} in the KV bucket is invalid: ${(err as Error).message}`);
  }
}

export function readPlacement(kv: KV): Promise<Stored<Placement> | undefined> {
  return readJson(kv, placementKey, placementSchema);
}

export function readLease(kv: KV, shard: number): Promise<Stored<Lease> | undefined> {
  return readJson(kv, leaseKey(shard), leaseSchema);
}

/**
 * Writes `p` if the stored placement is still at `revision` (0: none stored yet); a concurrent
 * change is a CONFLICT, never a lost update.
 */
export async function writePlacement(kv: KV, p: Placement, revision: number): Promise<number> {
  const data = JSON.stringify(placementSchema.parse(p));
  try {
    return revision === 0
      ? await kv.create(placementKey, data)
      : await kv.update(placementKey, data, revision);
  } catch (e) {
    throw new FreshetError('CONFLICT', `the shard placement changed meanwhile: ${(e as Error).message}`, {
      cause: e,
      retryable: true,
    });
  }
}

/**
 * The placement that runs `shards` shards on `hosts`: balanced (each host runs ⌊n/h⌋ or ⌈n/h⌉),
 * and moving as few shards as it can from `current` (a shard stays where it is while its host is
 * listed and not over its share). Hosts are filled in the order given.
 */
export function planPlacement(current: Placement | undefined, shards: number, hosts: string[]): string[] {
  if (hosts.length === 0) throw new FreshetError('BAD_REQUEST', 'a placement needs at least one host');
  const bad = hosts.map(hostNameError).find((x) => x);
  if (bad) throw new FreshetError('BAD_REQUEST', bad);
  if (new Set(hosts).size !== hosts.length) throw new FreshetError('BAD_REQUEST', 'a host is listed twice');
  if (current && current.hosts.length !== shards) {
    throw new FreshetError(
      'CONFIG',
      `the placement has ${current.hosts.length} shards, the cluster ${shards}: the shard count is fixed at init`,
    );
  }
  const base = Math.floor(shards / hosts.length);
  const extra = shards % hosts.length;
  // the first `extra` hosts (in the given order) may run one more
  const cap = new Map(hosts.map((h, i) => [h, base + (i < extra ? 1 : 0)]));
  const load = new Map(hosts.map((h) => [h, 0]));
  const out: (string | undefined)[] = new Array<string | undefined>(shards).fill(undefined);
  for (let i = 0; i < shards; i++) {
    const h = current?.hosts[i];
    if (h !== undefined && cap.has(h) && load.get(h)! < cap.get(h)!) {
      out[i] = h;
      load.set(h, load.get(h)! + 1);
    }
  }
  for (let i = 0; i < shards; i++) {
    if (out[i] !== undefined) continue;
    const h = hosts.find((x) => load.get(x)! < cap.get(x)!)!;
    out[i] = h;
    load.set(h, load.get(h)! + 1);
  }
  return out as string[];
}

/**
 * Takes shard `shard`'s lease for `host` when nobody holds it (or `host` already does: a
 * restart). Returns the lease as it was before, or `{busy}` with the holder that has not released
 * it yet. Compare-and-set on the KV revision, so two hosts never both take it.
 */
export async function takeLease(
  kv: KV,
  shard: number,
  host: string,
  epoch: number,
): Promise<{ taken: true; before: Lease | undefined } | { taken: false; holder: string }> {
  const cur = await readLease(kv, shard);
  if (cur?.value.holder && cur.value.holder !== host) return { taken: false, holder: cur.value.holder };
  const data = JSON.stringify({ holder: host, last: host, epoch, at: Date.now() } satisfies Lease);
  try {
    if (cur) await kv.update(leaseKey(shard), data, cur.revision);
    else await kv.create(leaseKey(shard), data);
  } catch {
    // someone else wrote it between our read and write: read again next round
    const now = await readLease(kv, shard);
    return { taken: false, holder: now?.value.holder ?? '(changing)' };
  }
  return { taken: true, before: cur?.value };
}

/** Releases `host`'s lease on `shard` (after its final checkpoint reached the Object Store). */
export async function releaseLease(kv: KV, shard: number, host: string, epoch: number): Promise<void> {
  const cur = await readLease(kv, shard);
  if (cur && cur.value.holder !== host) {
    throw new FreshetError('CONFLICT', `shard ${shard}'s lease is held by ${cur.value.holder}, not ${host}`);
  }
  const data = JSON.stringify({ holder: null, last: host, epoch, at: Date.now() } satisfies Lease);
  if (cur) await kv.update(leaseKey(shard), data, cur.revision);
  else await kv.create(leaseKey(shard), data);
}
