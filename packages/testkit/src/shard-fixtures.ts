import type { KV, NatsConnection } from 'nats';
import { placementKv, writePlacement } from '@freshet/nats';
import { shardOfKey, subjects } from '@freshet/protocol';

/**
 * A batch's keys of one sparse table (`n` distinct ids from `first`, key hi `hi`) that every one
 * of `shards` shards owns some of, in the shape a worker's shard client routes.
 */
export function keysOnEveryShard(
  n: number,
  shards: number,
  opts: { table?: number; first?: number; hi?: number; size?: number } = {},
) {
  const table = opts.table ?? 0;
  const first = opts.first ?? 1000;
  const hi = opts.hi ?? 0;
  const keys = Uint32Array.from({ length: 2 * n }, (_, i) => (i % 2 === 0 ? first + i : hi));
  const owners = new Set(Array.from({ length: n }, (_, i) => shardOfKey(table, keys[2 * i]!, hi, shards)));
  if (owners.size !== shards)
    throw new Error(`${n} keys from ${first} reach ${owners.size} of ${shards} shards`);
  return {
    size: opts.size ?? n,
    sparse: [{ table, keys, counts: new Uint32Array(n).fill(1) }],
    denseTables: [] as number[],
  };
}

/** Creates the cluster's KV bucket and writes its first shard placement (`hosts[i]` runs shard i). */
export async function placeShardsInKv(nc: NatsConnection, cluster: string, hosts: string[]): Promise<KV> {
  await nc.jetstream().views.kv(subjects(cluster).kvBucket);
  const kv = await placementKv(nc, cluster);
  await writePlacement(kv, { epoch: 1, hosts, at: Date.now() }, 0);
  return kv;
}
