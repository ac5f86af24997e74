import { describe, expect, it } from 'vitest';
import { useTempDirs, writeCriteoFixture } from '@freshet/testkit';
import { measurePartCosts } from '../src/part-probe.js';

const dir = useTempDirs()('part-probe');

// The per-part figures come from the worker's real ShardClient and a real shard (its log on
// disk, a real nats-server beside it). Which figure comes out is the bench's to report: a test
// run shares the cores, so only what timing cannot flip is asserted.
describe('part cost probe', () => {
  it("spreads a real batch over few and many shards and prices a shard's request", async () => {
    const criteo = writeCriteoFixture(dir, { rows: 300, seed: 3 }).path;
    const r = await measurePartCosts(criteo, { few: 4, many: 256, batches: 5, calls: 3000 });
    // the batch (256 examples, hundreds of distinct rows) touches every one of 4 shards and most
    // of 256: the slope is taken over that many more parts
    expect(r.partsFew).toBe(4);
    expect(r.partsMany).toBeGreaterThan(100);
    expect(r.partsMany).toBeLessThanOrEqual(256);
    // a slope of two busy times: never negative, never absurd (10 ms a part would mean the probe
    // timed something else)
    for (const k of ['workerPullPartUs', 'workerPushPartUs'] as const) {
      expect(r[k], k).toBeGreaterThanOrEqual(0);
      expect(r[k], k).toBeLessThan(10_000);
    }
    // a shard's busy time per request: some, and not absurd
    for (const k of ['shardPullPartUs', 'shardPushPartUs'] as const) {
      expect(r[k], k).toBeGreaterThan(0);
      expect(r[k], k).toBeLessThan(10_000);
    }
  }, 60_000);
});
