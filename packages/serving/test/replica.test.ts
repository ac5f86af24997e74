import { afterEach, describe, expect, it } from 'vitest';
import { initRow, parseModelSpec, shardOfDense, subjects, encodeDelta } from '@freshet/protocol';
import { uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Replica, type ReplicaEvent } from '../src/replica.js';
import { FakeShard, keyOwnedBy } from './fake-shard.js';

const nats = useNats();
const spec = parseModelSpec({
  name: 'm',
  tables: [
    { name: 'emb', dim: 4, init: { kind: 'normal', std: 0.1, seed: 3 } },
    { name: 'wide', dim: 1, init: { kind: 'zeros' } },
    { name: 'w', kind: 'dense', dim: 6, init: { kind: 'uniform', scale: 0.5, seed: 9 } },
  ],
});
const f32 = (...v: number[]) => new Float32Array(v);

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function setup(
  nShards: number,
  opts: { emaDecay?: number; pageSize?: number; applyStepMs?: number } = {},
) {
  const cluster = uniqueName('rep');
  const shards: FakeShard[] = [];
  for (let s = 0; s < nShards; s++) {
    const f = new FakeShard(nats.nc, cluster, s, nShards, spec);
    await f.start();
    cleanup.push(() => f.stop());
    shards.push(f);
  }
  const events: ReplicaEvent[] = [];
  const nc = await nats.connect('replica');
  const replica = new Replica(nc, {
    cluster,
    shards: nShards,
    spec,
    retryMs: 20,
    snapshotTimeoutMs: 1000,
    onEvent: (e) => events.push(e),
    ...opts,
  });
  cleanup.push(() => replica.stop());
  return { cluster, shards, replica, events, nc };
}

function row(replica: Replica, t: number, lo: number, hi: number): number[] {
  const out = new Float32Array(spec.tables[t]!.dim);
  replica.gather(t, new Uint32Array([lo, hi]), out);
  return Array.from(out);
}
function initial(t: number, lo: number, hi: number): number[] {
  const out = new Float32Array(spec.tables[t]!.dim);
  initRow(spec.tables[t]!.init, lo, hi, out);
  return Array.from(out);
}

describe('Replica', () => {
  it('loads a paged snapshot of every shard, then follows deltas', async () => {
    const { shards, replica } = await setup(2, { pageSize: 2 });
    const keys = [0, 1].flatMap((s) => [1, 100, 200].map((from) => keyOwnedBy(0, s, 2, from)));
    for (const [i, [lo, hi]] of keys.entries())
      shards.find((f) => f.owns(0, lo, hi))!.set(0, [[lo, hi, f32(i, i, i, i)]]);
    const denseOwner = shards[shardOfDense({ name: 'w' }, 2)]!;
    denseOwner.set(2, [[0, 0, f32(1, 2, 3, 4, 5, 6)]]);
    denseOwner.update([{ t: 1, set: [[5, 5, f32(0.5)]] }], { publish: false });

    expect(replica.ready).toBe(false);
    await replica.start();
    await replica.whenReady();
    for (const [i, [lo, hi]] of keys.entries()) expect(row(replica, 0, lo, hi)).toEqual([i, i, i, i]);
    expect(Array.from(replica.dense(2))).toEqual([1, 2, 3, 4, 5, 6]);
    expect(replica.versions()[denseOwner.shard]).toBe(1);
    // Three rows per shard in pages of two: two page requests for emb per shard.
    expect(shards[0]!.snapshotRequests).toBeGreaterThanOrEqual(2);

    const [lo, hi] = keys[0]!;
    const owner = shards.find((f) => f.owns(0, lo, hi))!;
    const before = replica.version();
    owner.update([{ t: 0, set: [[lo, hi, f32(9, 9, 9, 9)]] }]);
    await waitFor(() => row(replica, 0, lo, hi)[0] === 9, { message: 'delta applied' });
    expect(replica.version()).toBe(before + 1);
    expect(replica.freshestAgeMs()).not.toBeNull();
  });

  it("changes a dense table's stamp only when its values may have changed", async () => {
    const { shards, replica } = await setup(1);
    const f = shards[0]!;
    f.set(2, [[0, 0, f32(1, 2, 3, 4, 5, 6)]]);
    await replica.start();
    await replica.whenReady();
    const s0 = replica.denseStamp(2);
    // A delta of embedding rows only: caches built on the dense table stay valid.
    f.update([{ t: 0, set: [[1, 1, f32(1, 1, 1, 1)]] }]);
    await waitFor(() => replica.stats().seqs[0] === 1, { message: 'emb delta applied' });
    expect(replica.denseStamp(2)).toBe(s0);
    f.update([{ t: 2, set: [[0, 0, f32(6, 5, 4, 3, 2, 1)]] }]);
    await waitFor(() => replica.stats().seqs[0] === 2, { message: 'dense delta applied' });
    const s1 = replica.denseStamp(2);
    expect(s1).not.toBe(s0);
    expect(Array.from(replica.dense(2))).toEqual([6, 5, 4, 3, 2, 1]);
    // A lost delta makes the shard resync: every table may have changed.
    f.update([{ t: 0, set: [[1, 1, f32(2, 2, 2, 2)]] }], { publish: false });
    f.update([{ t: 0, set: [[1, 1, f32(3, 3, 3, 3)]] }]);
    await waitFor(() => replica.stats().seqs[0] === 4 && replica.ready, { message: 'resynced' });
    expect(replica.denseStamp(2)).not.toBe(s1);
  });

  it('applies a big delta in steps, yielding to the event loop, and keeps delta order', async () => {
    const { shards, replica } = await setup(1, { applyStepMs: 0 });
    const f = shards[0]!;
    await replica.start();
    await replica.whenReady();
    const n = 20_000;
    const big: [number, number, Float32Array][] = Array.from({ length: n }, (_, i) => [
      i + 1,
      3,
      f32(i, 1, 1, 1),
    ]);
    // Count event-loop turns that see the big delta part-applied (first row new, seq not yet).
    let partial = 0;
    let ticking = true;
    const tick = () => {
      if (row(replica, 0, 1, 3)[1] === 1 && replica.stats().seqs[0] === 0) partial++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    f.update([{ t: 0, set: big }]);
    // A later delta rewrites one of its rows: it must land after the big one, not before.
    f.update([{ t: 0, set: [[n, 3, f32(-1, -1, -1, -1)]] }]);
    await waitFor(() => replica.stats().seqs[0] === 2, { message: 'both deltas applied' });
    ticking = false;
    expect(partial).toBeGreaterThan(1);
    expect(row(replica, 0, 5000, 3)).toEqual([4999, 1, 1, 1]);
    expect(row(replica, 0, n, 3)).toEqual([-1, -1, -1, -1]);
    expect(replica.stats().deltasApplied).toBe(2);
  });

  it('keeps deltas published while the snapshot is being read', async () => {
    const { shards, replica } = await setup(1, { pageSize: 1 });
    const f = shards[0]!;
    f.set(0, [
      [1, 1, f32(1, 1, 1, 1)],
      [2, 2, f32(2, 2, 2, 2)],
    ]);
    // After the first page was read (at seq 0), two deltas change both rows.
    f.beforePage = async (page) => {
      if (page !== 1) return;
      f.update([{ t: 0, set: [[1, 1, f32(10, 10, 10, 10)]] }]);
      f.update([{ t: 0, set: [[3, 3, f32(3, 3, 3, 3)]] }]);
      await nats.nc.flush();
    };
    await replica.start();
    await replica.whenReady();
    expect(row(replica, 0, 1, 1)).toEqual([10, 10, 10, 10]);
    expect(row(replica, 0, 3, 3)).toEqual([3, 3, 3, 3]);
    expect(replica.stats().seqs).toEqual([2]);
  });

  it('resyncs a shard after a gap in its delta sequence', async () => {
    const { shards, replica, events } = await setup(1);
    const f = shards[0]!;
    f.set(0, [[1, 1, f32(1, 1, 1, 1)]]);
    await replica.start();
    await replica.whenReady();
    const snapshots = f.snapshotRequests;
    f.update([{ t: 0, set: [[1, 1, f32(5, 5, 5, 5)]] }], { publish: false }); // lost
    f.update([{ t: 0, set: [[2, 2, f32(6, 6, 6, 6)]] }]);
    await waitFor(() => row(replica, 0, 1, 1)[0] === 5, { message: 'lost update recovered by resync' });
    expect(row(replica, 0, 2, 2)).toEqual([6, 6, 6, 6]);
    expect(events.some((e) => e.kind === 'resync' && e.reason === 'gap')).toBe(true);
    expect(f.snapshotRequests).toBeGreaterThan(snapshots);
    expect(replica.stats().resyncs).toBe(1);
    // Following deltas apply normally again.
    f.update([{ t: 0, set: [[1, 1, f32(7, 7, 7, 7)]] }]);
    await waitFor(() => row(replica, 0, 1, 1)[0] === 7);
  });

  it('resyncs when a shard restarts its sequence', async () => {
    const { shards, replica, events } = await setup(1);
    const f = shards[0]!;
    await replica.start();
    await replica.whenReady();
    f.update([{ t: 0, set: [[1, 1, f32(1, 1, 1, 1)]] }]);
    f.update([{ t: 0, set: [[1, 1, f32(2, 2, 2, 2)]] }]);
    await waitFor(() => row(replica, 0, 1, 1)[0] === 2);
    f.restartSequence();
    f.rows[0]!.clear();
    f.update([{ t: 0, set: [[4, 4, f32(4, 4, 4, 4)]] }]);
    await waitFor(() => events.some((e) => e.kind === 'resync' && e.reason === 'restart'));
    await waitFor(() => row(replica, 0, 4, 4)[0] === 4);
    // The restarted shard no longer has row 1: the replica serves the default for it.
    await waitFor(() => !replica.has(0, 1, 1));
    expect(row(replica, 0, 1, 1)).toEqual(initial(0, 1, 1));
  });

  it('drops tombstoned rows and serves the deterministic default for them', async () => {
    const { shards, replica } = await setup(1);
    const f = shards[0]!;
    f.set(0, [[8, 9, f32(3, 3, 3, 3)]]);
    f.set(1, [[8, 9, f32(2)]]);
    await replica.start();
    await replica.whenReady();
    expect(row(replica, 0, 8, 9)).toEqual([3, 3, 3, 3]);
    f.update([
      { t: 0, dead: [[8, 9]] },
      { t: 1, dead: [[8, 9]] },
    ]);
    await waitFor(() => !replica.has(0, 8, 9), { message: 'tombstone applied' });
    expect(row(replica, 0, 8, 9)).toEqual(initial(0, 8, 9));
    expect(row(replica, 1, 8, 9)).toEqual([0]);
    expect(replica.stats().tombstones).toBe(2);
    // Unknown keys and an unset dense table are defaults too, never errors.
    expect(row(replica, 0, 123, 456)).toEqual(initial(0, 123, 456));
    expect(Array.from(replica.dense(2))).toEqual(initial(2, 0, 0));
  });

  it('serves an exponential moving average when configured', async () => {
    const { shards, replica } = await setup(1, { emaDecay: 0.5 });
    const f = shards[0]!;
    f.set(0, [[1, 1, f32(0, 0, 0, 0)]]);
    await replica.start();
    await replica.whenReady();
    f.update([{ t: 0, set: [[1, 1, f32(4, 4, 4, 4)]] }]);
    await waitFor(() => replica.stats().deltasApplied === 1);
    expect(row(replica, 0, 1, 1)).toEqual([2, 2, 2, 2]);
    f.update([{ t: 0, set: [[1, 1, f32(4, 4, 4, 4)]] }]);
    await waitFor(() => replica.stats().deltasApplied === 2);
    expect(row(replica, 0, 1, 1)).toEqual([3, 3, 3, 3]);
  });

  it('measures freshness from the deltas eventTs and survives malformed deltas', async () => {
    const { shards, replica, cluster, events } = await setup(1);
    const f = shards[0]!;
    await replica.start();
    await replica.whenReady();
    const now = Date.now();
    f.update([{ t: 0, set: [[1, 1, f32(1, 1, 1, 1)]] }], { eventTs: [now - 40, now - 20] });
    await waitFor(() => replica.stats().freshness.count === 2);
    const fr = replica.stats().freshness;
    expect(fr.p50).toBeGreaterThanOrEqual(15);
    expect(fr.p99).toBeGreaterThanOrEqual(fr.p50);
    expect(fr.p99).toBeLessThan(5000);

    // Garbage and a wrong-dim delta: counted, the shard is resynced, the replica keeps going.
    nats.nc.publish(subjects(cluster).delta(0), new Uint8Array([1, 2, 3]));
    nats.nc.publish(
      subjects(cluster).delta(0),
      encodeDelta({
        shard: 0,
        seq: f.seq + 1,
        version: 99,
        ts: Date.now(),
        eventTs: [],
        tables: [
          { t: 0, dim: 3, keys: new Uint32Array([1, 1]), values: f32(1, 2, 3), deadKeys: new Uint32Array() },
        ],
      }),
    );
    await waitFor(() => replica.stats().badDeltas >= 1 && events.some((e) => e.kind === 'bad-delta'));
    f.update([{ t: 0, set: [[1, 1, f32(6, 6, 6, 6)]] }]);
    await waitFor(() => row(replica, 0, 1, 1)[0] === 6, { message: 'recovered after bad deltas' });
    expect(replica.ready).toBe(true);
  });

  it('is not ready while a shard does not answer, and becomes ready when it appears', async () => {
    const cluster = uniqueName('rep');
    const nc = await nats.connect('replica');
    const replica = new Replica(nc, { cluster, shards: 1, spec, retryMs: 20, snapshotTimeoutMs: 200 });
    cleanup.push(() => replica.stop());
    await replica.start();
    await waitFor(() => replica.stats().syncing.length === 1);
    expect(replica.ready).toBe(false);
    const f = new FakeShard(nats.nc, cluster, 0, 1, spec);
    f.set(0, [[1, 2, f32(1, 2, 3, 4)]]);
    await f.start();
    cleanup.push(() => f.stop());
    await replica.whenReady();
    expect(row(replica, 0, 1, 2)).toEqual([1, 2, 3, 4]);
  });

  // Last: it restarts the file's nats-server.
  it('resyncs every shard after a reconnect, catching evictions it could not see', async () => {
    const { shards, replica, events } = await setup(1);
    const f = shards[0]!;
    f.set(0, [[5, 5, f32(5, 5, 5, 5)]]);
    await replica.start();
    await replica.whenReady();
    expect(replica.has(0, 5, 5)).toBe(true);
    // The shard evicts the row and the delta is lost (as if sent while the replica was away).
    f.update([{ t: 0, dead: [[5, 5]] }], { publish: false });
    await nats.server.restart();
    await waitFor(() => events.some((e) => e.kind === 'resync' && e.reason === 'reconnect'), {
      message: 'a resync after the reconnect',
    });
    await waitFor(() => !replica.has(0, 5, 5), { message: 'evicted row dropped by the resync' });
    expect(row(replica, 0, 5, 5)).toEqual(initial(0, 5, 5));
  });
});
