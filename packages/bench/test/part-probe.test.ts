import { describe, expect, it } from 'vitest';
import { useTempDirs, writeCriteoFixture } from '@freshet/testkit';
import { measurePartCosts } from '../src/part-probe.js';

const dir = useTempDirs()('part-probe');

// The per-part figures come from the worker's real ShardClient and a real shard (its log on
// disk, a real nats-server beside it).
describe('part cost probe', () => {
  it("prices a batch's part on the worker and a request on the shard, each above zero", async () => {
    const criteo = writeCriteoFixture(dir, {
      rows: 300,
      seed: 3,
    }).path;
    const r = await measurePartCosts(criteo, { few: 4, many: 256, batches: 5, calls: 3000 });
    // a slope between 4 and 256 shards: parts cost something, and nothing absurd (a part that
    // cost a millisecond would mean the probe timed something else)
    for (const k of ['workerPullPartUs', 'workerPushPartUs', 'shardPullPartUs', 'shardPushPartUs'] as const) {
      expect(r[k], k).toBeGreaterThan(0);
      expect(r[k], k).toBeLessThan(1000);
    }
  }, 60_000);
});
