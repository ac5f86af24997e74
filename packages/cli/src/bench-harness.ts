import type { ClusterHarness } from '@freshet/bench';
import { shardView, servingView, workerView } from './actor-view.js';
import { compileClusterConfig, shardHostNames } from './cluster-config.js';
import { placeShards } from './shard-placement-ops.js';
import { discoverActors, type ActorStatus } from './discovery.js';
import { startLocalCluster, type ClusterLog } from './local-cluster.js';

/**
 * The launcher `freshet bench cluster` hands to @freshet/bench: this package's local cluster
 * (the one `freshet up` runs) and its status views, so the bench measures exactly what users run.
 */
export function localClusterHarness(log?: ClusterLog): ClusterHarness<ActorStatus> {
  return {
    start: (config, o) =>
      startLocalCluster(compileClusterConfig(config, { source: o.source, baseDir: o.baseDir }), {
        ...(o.signal ? { signal: o.signal } : {}),
        ...(log ? { log } : {}),
        readyTimeoutMs: o.readyTimeoutMs,
        stopGraceMs: o.stopGraceMs,
        restartOnExit: o.restartOnExit,
      }),
    discover: (nc, o) => discoverActors(nc, o),
    async place(lc, hosts) {
      const r = await placeShards(lc.nc, lc.cluster, { hosts: shardHostNames(hosts), timeoutMs: 60_000 });
      return { moved: r.moved.length, ms: r.ms };
    },
    shardView,
    workerView,
    servingView,
  };
}
