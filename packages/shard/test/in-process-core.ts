import type { ModelSpec } from '@freshet/protocol';
import { ShardCore, type ShardCoreOptions } from '../src/shard-core.js';

/** A single in-process shard of `spec` with roomy limits, for tests that drive ShardCore directly. */
export function inProcessCore(spec: ModelSpec, o: Partial<ShardCoreOptions> = {}): ShardCore {
  return new ShardCore({
    spec,
    shard: 0,
    shards: 1,
    checkOwnership: true,
    maxPushRows: 1 << 20,
    maxPullKeys: 1 << 20,
    sketchWidth: 1 << 12,
    recentPushIds: 1 << 16,
    dcMaxWorkers: 8,
    dcMaxRowsPerWorker: 1 << 16,
    ...o,
  });
}
