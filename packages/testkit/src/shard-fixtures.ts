import type { KV, NatsConnection } from 'nats';
import { placementKv, writePlacement } from '@freshet/nats';
import { shardOfKey, subjects, type ModelSpecInput, type PushRequest } from '@freshet/protocol';

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

/** The `n`th key (lo from 100, hi 0) of table 0 that shard `shard` of `shards` owns. */
export function keyOnShard(shard: number, shards: number, n = 0): number {
  for (let k = 100, seen = 0; ; k++) if (shardOfKey(0, k, 0, shards) === shard && seen++ === n) return k;
}

/** Creates the cluster's KV bucket and writes its first shard placement (`hosts[i]` runs shard i). */
export async function placeShardsInKv(nc: NatsConnection, cluster: string, hosts: string[]): Promise<KV> {
  await nc.jetstream().views.kv(subjects(cluster).kvBucket);
  const kv = await placementKv(nc, cluster);
  await writePlacement(kv, { epoch: 1, hosts, at: Date.now() }, 0);
  return kv;
}

/** A model of one sparse table `emb` (Adam, no staleness policy): what most shard tests train. */
export function embeddingModel(
  name: string,
  opts: { dim?: number; lr?: number; optimizer?: 'adam' | 'adagrad' | 'sgd' } = {},
): ModelSpecInput {
  return {
    name,
    tables: [
      {
        name: 'emb',
        dim: opts.dim ?? 4,
        optimizer: { kind: opts.optimizer ?? 'adam', lr: opts.lr ?? 0.01 },
        staleness: { policy: 'none' },
      },
    ],
  };
}

/** A push of one row of table 0: `key` (hi 0) with every gradient `grad`. */
export function onePush(
  id: string,
  key: number,
  opts: { dim?: number; grad?: number; worker?: string } = {},
): PushRequest {
  const dim = opts.dim ?? 4;
  return {
    id,
    worker: opts.worker ?? 'w',
    clock: 0,
    base: 0,
    eventTs: Date.now(),
    tables: [
      {
        t: 0,
        dim,
        keys: Uint32Array.of(key, 0),
        grads: new Float32Array(dim).fill(opts.grad ?? 0.1),
        counts: Uint32Array.of(1),
      },
    ],
  };
}
