import { describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { requestBytes } from '@freshet/nats';
import {
  decodeDelta,
  decodePullReply,
  decodePushReply,
  decodeSnapshotPage,
  encodePull,
  encodePush,
  encodeSnapshotRequest,
  FreshetError,
  shardStatusSchema,
  shardStatusSubject,
  subjects,
  type Delta,
  type PushRequest,
} from '@freshet/protocol';
import { uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import { aligned, startShard } from '../src/shard.js';

const nats = useNats();
const tempDir = useTempDirs();
const tmp = () => tempDir('shard');

const model = {
  name: 'm',
  tables: [
    { name: 'emb', dim: 4, optimizer: { kind: 'adam', lr: 0.01 }, staleness: { policy: 'none' }, ttlMs: 0 },
    { name: 'mlp', kind: 'dense', dim: 6, optimizer: { kind: 'sgd', lr: 0.1 } },
  ],
};

function pushReq(id: string, keys: number[], g = 0.1, base = 0): PushRequest {
  const n = keys.length / 2;
  return {
    id,
    worker: 'w1',
    clock: 0,
    base,
    eventTs: Date.now(),
    tables: [
      {
        t: 0,
        dim: 4,
        keys: Uint32Array.from(keys),
        grads: new Float32Array(n * 4).fill(g),
        counts: new Uint32Array(n).fill(1),
      },
    ],
  };
}
async function pushTo(nc: NatsConnection, cluster: string, req: PushRequest) {
  return decodePushReply(aligned(await requestBytes(nc, subjects(cluster).push(0), encodePush(req))));
}
async function pull(nc: NatsConnection, cluster: string, keys: number[]) {
  return decodePullReply(
    aligned(
      await requestBytes(
        nc,
        subjects(cluster).pull(0),
        encodePull({ tables: [{ t: 0, keys: Uint32Array.from(keys) }] }),
      ),
    ),
  );
}

describe('shard over NATS', () => {
  it('serves pull/push, dedupes retries, publishes consecutive deltas, pages snapshots, reports status', async () => {
    const cluster = uniqueName('c');
    const s = subjects(cluster);
    const deltas: Delta[] = [];
    const sub = nats.nc.subscribe(s.delta(0), {
      callback: (_e, m) => deltas.push(decodeDelta(aligned(m.data))),
    });
    const shard = await startShard(
      { cluster, shard: 0, shards: 1, model, dataDir: tmp(), deltaIntervalMs: 5, maintenanceIntervalMs: 50 },
      { nc: nats.nc, log: () => undefined },
    );
    try {
      const p0 = await pull(nats.nc, cluster, [1, 0, 2, 0]);
      expect(p0.version).toBe(0);
      expect(Array.from(p0.tables[0]!.values)).toEqual(new Array(8).fill(0));

      const r1 = await pushTo(nats.nc, cluster, pushReq('a', [1, 0, 2, 0]));
      expect(r1).toMatchObject({ version: 1, applied: 2, duplicate: false });
      const again = await pushTo(nats.nc, cluster, pushReq('a', [1, 0, 2, 0]));
      expect(again).toMatchObject({ version: 1, duplicate: true, applied: 0 });
      const p1 = await pull(nats.nc, cluster, [1, 0]);
      expect(p1.version).toBe(1);
      expect(p1.tables[0]!.values[0]).toBeCloseTo(-0.01, 5);

      // Invalid pushes get error replies with codes; the shard keeps serving and counts them.
      const bad = pushReq('nan', [3, 0]);
      bad.tables[0]!.grads[1] = NaN;
      await expect(pushTo(nats.nc, cluster, bad)).rejects.toMatchObject({ code: 'NON_FINITE' });
      await expect(
        requestBytes(nats.nc, s.push(0), new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9])).then((b) =>
          decodePushReply(aligned(b)),
        ),
      ).rejects.toBeInstanceOf(FreshetError);
      await pushTo(nats.nc, cluster, pushReq('b', [2, 0, 3, 0]));

      // Deltas: seq 1, 2, ... without gaps, last values equal the pulled ones, eventTs carried.
      await waitFor(() => deltas.some((d) => d.version === 2), { message: 'delta of version 2' });
      expect(deltas.map((d) => d.seq)).toEqual(deltas.map((_, i) => i + 1));
      expect(deltas.flatMap((d) => d.eventTs).length).toBeGreaterThanOrEqual(2);
      const last = new Map<string, number>();
      for (const d of deltas)
        for (const t of d.tables.filter((x) => x.t === 0))
          for (let i = 0; i < t.keys.length / 2; i++) last.set(`${t.keys[2 * i]}`, t.values[i * 4]!);
      const p2 = await pull(nats.nc, cluster, [1, 0, 2, 0, 3, 0]);
      expect([last.get('1'), last.get('2'), last.get('3')]).toEqual(
        [0, 4, 8].map((i) => p2.tables[0]!.values[i]),
      );

      // Snapshot in pages of 2.
      const keys: number[] = [];
      let cursor: number | null = 0;
      while (cursor !== null) {
        const page = decodeSnapshotPage(
          aligned(
            await requestBytes(nats.nc, s.snapshot(0), encodeSnapshotRequest({ t: 0, cursor, limit: 2 })),
          ),
        );
        keys.push(...Array.from(page.keys).filter((_, i) => i % 2 === 0));
        cursor = page.next;
      }
      expect(keys.sort()).toEqual([1, 2, 3]);

      // Status via the service API and the status subject.
      const st = shardStatusSchema.parse(
        JSON.parse(
          new TextDecoder().decode(
            (await nats.nc.request(shardStatusSubject(cluster, 0), '', { timeout: 2000 })).data,
          ),
        ),
      );
      expect(st).toMatchObject({ state: 'running', version: 2, rows: 4, duplicates: 1 });
      expect(st.rejects.NON_FINITE).toBe(1);
      expect(st.rejects.BAD_FRAME).toBe(1);
      expect(st.timings?.applyMs.n).toBe(2);
      expect(st.timings?.walMs.n).toBe(2);
      expect(st.timings?.deltaMs.n).toBeGreaterThanOrEqual(1);
      const stats = await nats.nc.services.client().stats(s.serviceName('shard'));
      const mine = [];
      for await (const x of stats) if (x.metadata?.cluster === cluster) mine.push(x);
      expect(mine).toHaveLength(1);
      expect(mine[0]!.metadata).toMatchObject({ role: 'shard', shard: '0' });
      expect(shardStatusSchema.parse(mine[0]!.endpoints?.[0]?.data).version).toBe(2);
    } finally {
      sub.unsubscribe();
      await shard.stop();
    }
    expect(shard.state).toBe('stopped');
  });

  it('SSP: a pull from a worker too far ahead waits until the slowest worker’s clock advances', async () => {
    const cluster = uniqueName('ssp');
    const s = subjects(cluster);
    const shard = await startShard(
      {
        cluster,
        shard: 0,
        shards: 1,
        model: { name: 'm', tables: [{ name: 'e', dim: 2, staleness: { policy: 'ssp', bound: 1 } }] },
      },
      { nc: nats.nc, log: () => undefined },
    );
    try {
      const pullAt = (worker: string, clock: number) =>
        requestBytes(
          nats.nc,
          s.pull(0),
          encodePull({ worker, clock, tables: [{ t: 0, keys: Uint32Array.from([1, 0]) }] }),
          {
            timeoutMs: 10_000,
          },
        ).then((b) => decodePullReply(aligned(b)));
      await pullAt('slow', 0);
      let done = false;
      const fast = pullAt('fast', 3).then((r) => ((done = true), r));
      // Still waiting after the slow worker reports clock 1 (3 − 1 > 1) ...
      nats.nc.publish(s.workerClock('slow'), JSON.stringify({ clock: 1 }));
      // A request after it on the same connection is delivered after it: the shard has seen clock 1.
      const st = shardStatusSchema.parse(
        JSON.parse(
          new TextDecoder().decode(
            (await nats.nc.request(shardStatusSubject(cluster, 0), '', { timeout: 2000 })).data,
          ),
        ),
      );
      expect(st.ssp).toMatchObject({ waiting: 1, waits: 1 });
      expect(done).toBe(false);
      // ... and released once it reaches clock 2 (3 − 2 ≤ 1).
      nats.nc.publish(s.workerClock('slow'), JSON.stringify({ clock: 2 }));
      expect((await fast).version).toBe(0);
      expect(done).toBe(true);
    } finally {
      await shard.stop();
    }
  });

  it('evicts expired rows: tombstones in a delta, eviction logged and replayed, oversize pushes rejected', async () => {
    const cluster = uniqueName('ttl');
    const s = subjects(cluster);
    const dataDir = tmp();
    const ttlModel = {
      name: 'm',
      tables: [
        { name: 'e', dim: 4, ttlMs: 300, staleness: { policy: 'none' }, optimizer: { kind: 'sgd', lr: 1 } },
      ],
    };
    const opts = {
      cluster,
      shard: 0,
      shards: 1,
      model: ttlModel,
      dataDir,
      maintenanceIntervalMs: 20,
      checkpointIntervalMs: 0,
      limits: { maxPushBytes: 4096 },
    };
    const dead: number[] = [];
    const sub = nats.nc.subscribe(s.delta(0), {
      callback: (_e, m) => {
        for (const t of decodeDelta(aligned(m.data)).tables)
          dead.push(...Array.from(t.deadKeys).filter((_, i) => i % 2 === 0));
      },
    });
    const a = await startShard(opts, { nc: nats.nc, log: () => undefined });
    let b: Awaited<ReturnType<typeof startShard>> | undefined;
    try {
      await pushTo(nats.nc, cluster, pushReq('old', [1, 0, 2, 0]));
      // Keep row 2 fresh while row 1 expires.
      await waitFor(
        async () => {
          await pushTo(nats.nc, cluster, pushReq(`keep-${Date.now()}`, [2, 0]));
          return dead.includes(1);
        },
        { intervalMs: 50, message: 'tombstone of row 1' },
      );
      expect(dead).not.toContain(2);
      expect(a.status().evictions).toBeGreaterThanOrEqual(1);
      await expect(
        pushTo(
          nats.nc,
          cluster,
          pushReq(
            'big',
            Array.from({ length: 400 }, (_, i) => i),
          ),
        ),
      ).rejects.toMatchObject({
        code: 'OVERSIZE',
      });
      // A second shard restoring the same directory (under another cluster name) replays the
      // eviction: row 1 is gone, row 2 is there. (The tombstone delta went out only once durable.)
      b = await startShard(
        { ...opts, cluster: uniqueName('ttl-replay') },
        { nc: nats.nc, log: () => undefined },
      );
      expect(b.core.tables[0]!.store.find(1, 0)).toBe(-1);
      expect(b.core.tables[0]!.store.find(2, 0)).toBeGreaterThanOrEqual(0);
      expect(b.core.evictions).toBeGreaterThanOrEqual(1);
    } finally {
      sub.unsubscribe();
      await b?.stop();
      await a.stop();
    }
  });

  it('reads the model spec from KV, restores from its data dir after a clean stop, serves the dense table', async () => {
    const cluster = uniqueName('kv');
    const s = subjects(cluster);
    const kv = await nats.nc.jetstream().views.kv(s.kvBucket);
    await kv.put('model-spec', JSON.stringify(model));
    const dataDir = tmp();
    const opts = { cluster, shard: 0, shards: 1, dataDir, maintenanceIntervalMs: 50 };
    const a = await startShard(opts, { nc: nats.nc, log: () => undefined });
    await pushTo(nats.nc, cluster, pushReq('x', [9, 9], 0.5));
    const dense: PushRequest = {
      id: 'd',
      worker: 'w1',
      clock: 0,
      base: 1,
      tables: [
        {
          t: 1,
          dim: 6,
          keys: new Uint32Array(2),
          grads: new Float32Array(6).fill(1),
          counts: Uint32Array.from([1]),
        },
      ],
    };
    expect((await pushTo(nats.nc, cluster, dense)).applied).toBe(1);
    const before = await pull(nats.nc, cluster, [9, 9]);
    await a.stop();
    const b = await startShard(opts, { nc: nats.nc, log: () => undefined });
    try {
      expect(b.restore?.checkpointSegment).not.toBeNull();
      const after = await pull(nats.nc, cluster, [9, 9]);
      expect(after.version).toBe(2);
      expect(Array.from(after.tables[0]!.values)).toEqual(Array.from(before.tables[0]!.values));
      const d = decodePullReply(
        aligned(
          await requestBytes(
            nats.nc,
            s.pull(0),
            encodePull({ tables: [{ t: 1, keys: new Uint32Array(2) }] }),
          ),
        ),
      );
      expect(d.tables[0]!.values[0]).toBeCloseTo(-0.1, 6);
    } finally {
      await b.stop();
    }
  });
});
