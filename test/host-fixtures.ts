import type { NatsFixture } from '@freshet/testkit';
import type { ModelSpec } from '@freshet/protocol';
import { Replica } from '@freshet/serving';
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
