import { describe, expect, it } from 'vitest';
import { clusterBenchOptionsSchema } from '../src/cluster-bench.js';

describe('bench cluster options', () => {
  it('shard hosts, their threads and placements go together', () => {
    const ok = clusterBenchOptionsSchema.parse({
      data: 'criteo:x',
      shards: 4,
      shardHosts: 2,
      shardThreads: 1,
    });
    expect([ok.shardHosts, ok.shardThreads]).toEqual([2, 1]);
    expect(
      clusterBenchOptionsSchema.safeParse({ data: 'criteo:x', shardThreads: 1 }).error?.issues[0]?.message,
    ).toBe('shardThreads needs shardHosts');
    expect(
      clusterBenchOptionsSchema.safeParse({ data: 'criteo:x', shards: 4, placements: [2] }).error?.issues[0]
        ?.path,
    ).toEqual(['placements']);
  });
});
