import { join } from 'node:path';
import type { NatsFixture } from '@freshet/testkit';
import { requestBytes } from '@freshet/nats';
import { encodeSnapshotRequest, subjects, type ModelSpec } from '@freshet/protocol';
import { Replica } from '@freshet/serving';
import { ShardHost, type ShardHostOptionsInput } from '@freshet/shard';
import { HostRouter, ShardClient } from '@freshet/worker';

/** What the shard-host tests build around their hosts: a serving replica, a router, a client. */
export interface HostTestCluster {
  nc: NatsFixture['nc'];
  cluster: string;
  shards: number;
  spec: ModelSpec;
}

/** A serving replica that retries quickly (not started). */
export function testReplica(c: HostTestCluster): Replica {
  return new Replica(c.nc, {
    cluster: c.cluster,
    shards: c.shards,
    spec: c.spec,
    retryMs: 20,
    snapshotTimeoutMs: 2000,
  });
}

/** A worker's host router (not started: `start(kv)`). */
export function testHostRouter(c: HostTestCluster): HostRouter {
  return new HostRouter(c.nc, {
    cluster: c.cluster,
    timeoutMs: 3000,
    maxMessageBytes: 1 << 20,
    cooldownMs: 60_000,
  });
}

/** A worker's shard client as worker `w`, through `router` when given. */
export function testShardClient(
  c: HostTestCluster,
  opts: {
    router?: HostRouter;
    timeoutMs?: number;
    retry?: { attempts: number; baseMs: number; maxMs: number };
  } = {},
): ShardClient {
  return new ShardClient(c.nc, {
    cluster: c.cluster,
    shards: c.shards,
    spec: c.spec,
    worker: 'w',
    timeoutMs: opts.timeoutMs ?? 3000,
    retry: opts.retry ?? { attempts: 3, baseMs: 20, maxMs: 100 },
    denseCacheMaxLag: 0,
    ...(opts.router ? { router: opts.router } : {}),
  });
}

/**
 * Shard hosts of `cluster`, by name with their shard-thread count, started with the same shard
 * options (the placement in KV says which shards each runs); stop them when done.
 */
export async function startShardHosts(o: {
  cluster: string;
  url: string;
  dir: string;
  threads: Record<string, number>;
  shard: ShardHostOptionsInput['shard'];
}): Promise<ShardHost[]> {
  const hosts: ShardHost[] = [];
  for (const [host, threads] of Object.entries(o.threads)) {
    const h = new ShardHost(
      {
        cluster: o.cluster,
        host,
        nats: { servers: o.url },
        dataDir: join(o.dir, host),
        pollMs: 50,
        threads,
        shard: o.shard,
      },
      { log: () => undefined },
    );
    await h.start();
    hosts.push(h);
  }
  return hosts;
}

/** How many of shards 0 … shards − 1 answer a snapshot request now (wherever they run). */
export async function shardsAnswering(
  nc: NatsFixture['nc'],
  cluster: string,
  shards: number,
): Promise<number> {
  const s = subjects(cluster);
  let n = 0;
  for (let shard = 0; shard < shards; shard++) {
    try {
      await requestBytes(nc, s.snapshot(shard), encodeSnapshotRequest({ t: 0, cursor: 0, limit: 1 }), {
        timeoutMs: 500,
      });
      n++;
    } catch {
      // not running yet
    }
  }
  return n;
}
