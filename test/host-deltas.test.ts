import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { requestBytes } from '@freshet/nats';
import {
  decodeDelta,
  decodeHostDelta,
  decodePushReply,
  encodePush,
  parseModelSpec,
  subjects,
} from '@freshet/protocol';
import { ShardHost } from '@freshet/shard';
import {
  embeddingModel,
  keyOnShard,
  keysOnEveryShard,
  onePush,
  placeShardsInKv,
  uniqueName,
  useNats,
  useTempDirs,
  waitFor,
} from '@freshet/testkit';
import { testHostRouter, testReplica, testShardClient } from './host-fixtures.js';

const nats = useNats();
const tempDir = useTempDirs();
const SHARDS = 3;
const DIM = 4;
const model = embeddingModel('host-deltas', { dim: DIM, lr: 0.05 });
const spec = parseModelSpec(model);
const quiet = () => undefined;

const batch = () => keysOnEveryShard(60, SHARDS, { first: 500, hi: 7, size: 64 });

/**
 * Host deltas (shard option `hostDeltas`): a shard host's shards publish their deltas in one
 * message per tick; a serving replica reads each part as its shard's own delta, so it follows
 * the pushes exactly, and a shard running alone on its host keeps its own subject.
 */
describe('host deltas', () => {
  it("carry a host's shards' deltas in one message that serving applies shard by shard", async () => {
    const cluster = uniqueName('hdelta').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    // shards 0 and 1 on host a, shard 2 alone on host b
    const kv = await placeShardsInKv(nats.nc, cluster, ['a', 'a', 'b']);
    const dir = tempDir('hosts');
    const hosts = ['a', 'b'].map(
      (host) =>
        new ShardHost(
          {
            cluster,
            host,
            nats: { servers: nats.url },
            dataDir: join(dir, host),
            pollMs: 50,
            shard: { model, fsync: false, checkpointIntervalMs: 0, hostDeltas: true, deltaIntervalMs: 20 },
          },
          { log: quiet },
        ),
    );
    const own: number[] = [];
    // host → the shards of each host delta it sent (recorded only: a throw in a NATS callback
    // would break the test's connection, not fail the test)
    const hostParts = new Map<string, number[][]>();
    const subs = [
      nats.nc.subscribe(s.deltaAll, { callback: (_e, m) => own.push(decodeDelta(m.data).shard) }),
      nats.nc.subscribe(s.hostDeltaAll, {
        callback: (_e, m) => {
          const host = m.subject.slice(m.subject.lastIndexOf('.') + 1);
          const l = hostParts.get(host) ?? [];
          l.push(decodeHostDelta(m.data).map((p) => decodeDelta(p.frame).shard));
          hostParts.set(host, l);
        },
      }),
    ];
    await Promise.all(hosts.map((h) => h.start()));
    const tc = { nc: nats.nc, cluster, shards: SHARDS, spec };
    const replica = testReplica(tc);
    const router = testHostRouter(tc);
    try {
      await replica.start();
      await replica.whenReady();
      await router.start(kv);
      await waitFor(() => router.hostOf(2) === 'b', { timeoutMs: 5000 });
      const c = testShardClient(tc, { router });
      const b = batch();
      const plan = c.route(b);
      for (let i = 0; i < 3; i++) {
        const pulled = await c.pull(plan);
        const out = await c.push(plan, pulled, [new Float32Array(60 * DIM).fill(0.3 - 0.2 * i)], {
          id: `b${i}`,
          examples: b.size,
        });
        expect(out.accepted.size).toBe(SHARDS);
      }
      // serving follows every push of every shard
      await waitFor(() => replica.versions().every((v) => v === 3), { timeoutMs: 5000 });
      const shardRows = (await c.pull(plan)).rows[0]!;
      const served = new Float32Array(60 * DIM);
      for (let i = 0; i < 60; i++)
        replica.gather(
          0,
          b.sparse[0]!.keys.subarray(2 * i, 2 * i + 2),
          served.subarray(i * DIM, (i + 1) * DIM),
        );
      expect(Array.from(served)).toEqual(Array.from(shardRows));
      // host a's shards went out together; host b's lone shard on its own subject (or, when it
      // published twice in one tick, a host delta of its shard alone)
      const fromA = hostParts.get('a') ?? [];
      expect(fromA.length).toBeGreaterThan(0);
      expect(fromA.flat().every((p) => p === 0 || p === 1)).toBe(true);
      expect(fromA.some((parts) => parts.includes(0) && parts.includes(1))).toBe(true);
      expect((hostParts.get('b') ?? []).flat().every((p) => p === 2)).toBe(true);
      expect([...hostParts.keys()].every((h) => h === 'a' || h === 'b')).toBe(true);
      // a tick with one part goes on the shard's own subject: one more push, to shard 2 alone (under
      // load each push above can land while the shard's tick awaits its log append, so that tick
      // publishes two frames: a host delta of shard 2 twice, and nothing on its own subject)
      const lone = await c.push(plan, await c.pull(plan), [new Float32Array(60 * DIM).fill(0.1)], {
        id: 'lone',
        examples: b.size,
        only: new Set([2]),
      });
      expect([...lone.accepted]).toEqual([2]);
      await waitFor(() => own.includes(2), {
        timeoutMs: 5000,
        message: "shard 2's lone delta on its own subject",
      });
      // every host delta the host counts reached the bus (the last may still be on its way)
      await waitFor(() => (hostParts.get('a') ?? []).length === hosts[0]!.status().hostDeltas?.messages, {
        timeoutMs: 5000,
      });
      expect(replica.stats().badDeltas).toBe(0);
    } finally {
      for (const sub of subs) sub.unsubscribe();
      await router.stop();
      await replica.stop();
      await Promise.all(hosts.map((h) => h.stop()));
    }
  });

  // shard option `servingSlices`: the host's message per tick split by serving slice, whether
  // the shards run on the host's thread or in shard threads (the host's thread sends for both)
  for (const threads of [0, 2]) {
    it(`with servingSlices 2 go out per slice, each with its slice's shards (threads ${threads})`, async () => {
      const cluster = uniqueName('hdslice').replace(/[^A-Za-z0-9_-]/g, '');
      const s = subjects(cluster);
      const N = 4;
      await placeShardsInKv(nats.nc, cluster, ['a', 'a', 'a', 'a']);
      const host = new ShardHost(
        {
          cluster,
          host: 'a',
          nats: { servers: nats.url },
          dataDir: join(tempDir('slices'), 'a'),
          pollMs: 50,
          threads,
          shard: {
            model,
            fsync: false,
            checkpointIntervalMs: 0,
            hostDeltas: true,
            servingSlices: 2,
            // long enough that a round's pushes to the four shards land in one tick
            deltaIntervalMs: 50,
          },
        },
        { log: quiet },
      );
      // subject → the shards of each message on it (recorded only, asserted after)
      const bySubject = new Map<string, number[][]>();
      const badParts: string[] = [];
      const subs = [
        nats.nc.subscribe(s.hostDeltaAll, {
          callback: (_e, m) => {
            const parts = decodeHostDelta(m.data);
            for (const p of parts)
              if (decodeDelta(p.frame).shard !== p.shard) badParts.push(`${m.subject}: ${p.shard}`);
            bySubject.set(m.subject, [...(bySubject.get(m.subject) ?? []), parts.map((p) => p.shard)]);
          },
        }),
      ];
      const tc = { nc: nats.nc, cluster, shards: N, spec };
      // a serving node of the whole model hears the per-slice messages too (`hdelta.>`)
      const replica = testReplica(tc);
      await host.start();
      try {
        await waitFor(() => host.shards.size === N, { timeoutMs: 10_000 });
        await replica.start();
        await replica.whenReady();
        const rounds = 4;
        for (let i = 0; i < rounds; i++) {
          const replies = await Promise.all(
            Array.from({ length: N }, (_, sh) =>
              requestBytes(
                nats.nc,
                s.push(sh),
                encodePush(onePush(`p${i}.${sh}`, keyOnShard(sh, N, i), { dim: DIM })),
                { timeoutMs: 3000 },
              ),
            ),
          );
          for (const r of replies) expect(decodePushReply(r).applied).toBe(1);
          await new Promise((r) => setTimeout(r, 70));
        }
        await waitFor(() => replica.versions().every((v) => v === rounds), { timeoutMs: 5000 });
        await waitFor(
          () =>
            [...bySubject.values()].reduce((n, l) => n + l.length, 0) === host.status().hostDeltas?.messages,
          { timeoutMs: 5000 },
        );
        const slice0 = s.hostDeltaSlice('a', 2, 0);
        const slice1 = s.hostDeltaSlice('a', 2, 1);
        expect([...bySubject.keys()].sort()).toEqual([slice0, slice1].sort());
        expect(bySubject.has(s.hostDelta('a'))).toBe(false);
        const on0 = bySubject.get(slice0)!;
        const on1 = bySubject.get(slice1)!;
        expect(on0.flat().every((sh) => sh === 0 || sh === 2)).toBe(true);
        expect(on1.flat().every((sh) => sh === 1 || sh === 3)).toBe(true);
        expect(on0.some((parts) => parts.includes(0) && parts.includes(2))).toBe(true);
        expect(on1.some((parts) => parts.includes(1) && parts.includes(3))).toBe(true);
        expect(badParts).toEqual([]);
        expect(replica.stats().badDeltas).toBe(0);
      } finally {
        for (const sub of subs) sub.unsubscribe();
        await replica.stop();
        await host.stop();
      }
    });
  }
});
