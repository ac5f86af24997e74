import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readPlacement, writePlacement } from '@freshet/nats';
import { decodeDelta, decodeHostDelta, parseModelSpec, subjects } from '@freshet/protocol';
import { compileShardHostOptions, ShardHost } from '@freshet/shard';
import {
  embeddingModel,
  keysOnEveryShard,
  placeShardsInKv,
  uniqueName,
  useNats,
  useTempDirs,
  waitFor,
} from '@freshet/testkit';
import { testHostRouter, testReplica, testShardClient } from './host-fixtures.js';

const nats = useNats();
const tempDir = useTempDirs();
const SHARDS = 4;
const DIM = 4;
const model = embeddingModel('shard-threads', { dim: DIM, lr: 0.05 });
const spec = parseModelSpec(model);
const quiet = () => undefined;

const batch = () => keysOnEveryShard(60, SHARDS, { first: 900, hi: 5, size: 64 });

/** Host 'a' of `cluster` alone, its shards in `threads` shard threads. */
function threadedHost(cluster: string, threads: number, shard: Record<string, unknown> = {}): ShardHost {
  return new ShardHost(
    {
      cluster,
      host: 'a',
      nats: { servers: nats.url },
      dataDir: join(tempDir('host'), 'a'),
      pollMs: 50,
      threads,
      shard: { model, fsync: false, checkpointIntervalMs: 0, ...shard },
    },
    { log: quiet },
  );
}

/**
 * Shard threads (shard host option `threads`): the host's shards run in worker threads, each on
 * its own NATS connection, and the host's thread hands them the parts of host messages and sends
 * their deltas as one host delta per tick. Seen from outside nothing changes: host messages, each
 * shard's own subjects, deltas and moves.
 */
describe('shard threads', () => {
  it('threads is a bounded count, 0 by default', () => {
    const base = { cluster: 'c', host: 'h', dataDir: 'd', shard: { model } };
    expect(compileShardHostOptions(base).threads).toBe(0);
    expect(compileShardHostOptions({ ...base, threads: 3 }).threads).toBe(3);
    expect(() => compileShardHostOptions({ ...base, threads: -1 })).toThrow(/threads/);
    expect(() => compileShardHostOptions({ ...base, threads: 1.5 })).toThrow(/threads/);
  });

  it('serve host messages, their own subjects and deltas, and hand a shard off to another host', async () => {
    const cluster = uniqueName('sthreads').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    // shards 0-2 on host a (two shard threads), shard 3 on host b (its own thread)
    const kv = await placeShardsInKv(nats.nc, cluster, ['a', 'a', 'a', 'b']);
    const dir = tempDir('hosts');
    const hosts = (['a', 'b'] as const).map(
      (host) =>
        new ShardHost(
          {
            cluster,
            host,
            nats: { servers: nats.url },
            dataDir: join(dir, host),
            pollMs: 50,
            threads: host === 'a' ? 2 : 0,
            shard: { model, fsync: false, checkpointIntervalMs: 0, hostDeltas: true, deltaIntervalMs: 20 },
          },
          { log: quiet },
        ),
    );
    const [a, b] = hosts as [ShardHost, ShardHost];
    // the shards of each host delta, by host (recorded only: a throw in a NATS callback would
    // break the test's connection, not fail the test)
    const hostParts = new Map<string, number[][]>();
    const sub = nats.nc.subscribe(s.hostDeltaAll, {
      callback: (_e, m) => {
        const from = m.subject.slice(m.subject.lastIndexOf('.') + 1);
        hostParts.set(from, [
          ...(hostParts.get(from) ?? []),
          decodeHostDelta(m.data).map((p) => decodeDelta(p.frame).shard),
        ]);
      },
    });
    await Promise.all(hosts.map((h) => h.start()));
    const tc = { nc: nats.nc, cluster, shards: SHARDS, spec };
    const replica = testReplica(tc);
    const router = testHostRouter(tc);
    const retry = { attempts: 5, baseMs: 20, maxMs: 200 };
    try {
      await waitFor(() => a.shards.size === 3 && b.shards.size === 1, { timeoutMs: 10_000 });
      // three shards over two threads: both used
      expect(a.status().threads?.slice().sort()).toEqual([1, 2]);
      expect(b.status().threads).toBeNull();
      await replica.start();
      await replica.whenReady();
      await router.start(kv);
      await waitFor(() => router.hostOf(0) === 'a' && router.hostOf(3) === 'b', { timeoutMs: 5000 });
      const routed = testShardClient(tc, { router, retry });
      const direct = testShardClient(tc, { retry });
      const bt = batch();
      const plan = routed.route(bt);
      const push = async (i: number) => {
        const pulled = await routed.pull(plan);
        const grads = [new Float32Array(60 * DIM).fill(0.3 - 0.2 * i)];
        return routed.push(plan, pulled, grads, { id: `b${i}`, examples: bt.size });
      };
      for (let i = 0; i < 3; i++) expect((await push(i)).accepted.size).toBe(SHARDS);
      // host a's three shards in one message each time (b's lone shard is asked directly)
      expect(router.stats).toMatchObject({ hostMessages: 6, hostParts: 18, hostFailures: 0, notHere: 0 });
      // the same push again is a duplicate on every shard, threaded or not
      const pulledAgain = await routed.pull(plan);
      const again = await routed.push(plan, pulledAgain, [new Float32Array(60 * DIM).fill(0.1)], {
        id: 'b2',
        examples: bt.size,
      });
      expect(again.duplicates).toBe(SHARDS);

      // each shard's own subject answers from its thread as the host message did
      const rows = (await routed.pull(plan)).rows[0]!;
      expect(Array.from((await direct.pull(direct.route(bt))).rows[0]!)).toEqual(Array.from(rows));
      // serving follows every push, through each thread's host deltas
      await waitFor(() => replica.versions().every((v) => v === 3), { timeoutMs: 5000 });
      const served = new Float32Array(60 * DIM);
      for (let i = 0; i < 60; i++)
        replica.gather(
          0,
          bt.sparse[0]!.keys.subarray(2 * i, 2 * i + 2),
          served.subarray(i * DIM, (i + 1) * DIM),
        );
      expect(Array.from(served)).toEqual(Array.from(rows));
      expect(replica.stats().badDeltas).toBe(0);
      // one host delta per tick for all of a's threads: shards of both threads in one message
      const fromA = hostParts.get('a') ?? [];
      // (b's lone shard on its own subject, or, when it published twice in a tick, alone in one)
      expect([...hostParts.keys()].every((h) => h === 'a' || h === 'b')).toBe(true);
      expect((hostParts.get('b') ?? []).flat().every((p) => p === 3)).toBe(true);
      expect(fromA.flat().every((p) => p <= 2)).toBe(true);
      expect(fromA.some((parts) => new Set(parts).size >= 2)).toBe(true);
      expect(a.status().hostDeltas!.messages).toBeGreaterThan(0);
      // the host's status mirrors its threads' shards
      await waitFor(() => [0, 1, 2].every((i) => a.shards.get(i)?.status().version === 3), {
        timeoutMs: 5000,
      });

      // move shard 0 from threaded host a to b: its final checkpoint goes through the Object Store
      const p = (await readPlacement(kv))!;
      await writePlacement(kv, { epoch: 2, hosts: ['b', 'a', 'a', 'b'], at: Date.now() }, p.revision);
      await waitFor(() => b.shards.get(0)?.state === 'running' && !a.shards.has(0), { timeoutMs: 15_000 });
      expect(b.shards.get(0)!.status().version).toBe(3);
      expect(b.shards.get(0)!.restore?.checkpointSource).toBe('object-store');
      await waitFor(() => a.status().unreleased.length === 0, { timeoutMs: 5000 });
      expect(a.status().threads!.reduce((x, y) => x + y)).toBe(2);
      await waitFor(() => router.hostOf(0) === 'b', { timeoutMs: 5000 });
      expect((await push(3)).accepted.size).toBe(SHARDS);
      await waitFor(() => replica.versions().every((v) => v === 4), { timeoutMs: 5000 });
    } finally {
      sub.unsubscribe();
      await router.stop();
      await replica.stop();
      await Promise.all(hosts.map((h) => h.stop()));
    }
    // stopped, the host's threads are gone and its shards handed off
    expect(a.status().running).toEqual([]);
    expect(a.status().unreleased).toEqual([]);
  });

  it('host messages are answered by the host thread and every shard thread, each handing the others their parts', async () => {
    const cluster = uniqueName('sthreadq').replace(/[^A-Za-z0-9_-]/g, '');
    const kv = await placeShardsInKv(nats.nc, cluster, ['a', 'a', 'a', 'a']);
    const host = threadedHost(cluster, 3);
    await host.start();
    const tc = { nc: nats.nc, cluster, shards: SHARDS, spec };
    const router = testHostRouter(tc);
    try {
      await waitFor(() => host.shards.size === SHARDS, { timeoutMs: 10_000 });
      // four shards over three threads: a host message's parts are on every thread
      expect(host.status().threads!.slice().sort()).toEqual([1, 1, 2]);
      await router.start(kv);
      await waitFor(() => router.hostOf(0) === 'a', { timeoutMs: 5000 });
      const routed = testShardClient(tc, { router });
      const direct = testShardClient(tc);
      const bt = batch();
      const plan = routed.route(bt);
      const grads = [new Float32Array(60 * DIM).fill(0.25)];
      expect(
        (await routed.push(plan, await routed.pull(plan), grads, { id: 'q', examples: bt.size })).accepted
          .size,
      ).toBe(SHARDS);
      const want = Array.from((await direct.pull(direct.route(bt))).rows[0]!);
      // one host message per pull (awaited one by one); NATS spreads them over the queue group
      const N = 48;
      for (let i = 0; i < N; i++) expect(Array.from((await routed.pull(plan)).rows[0]!)).toEqual(want);
      // batches pulled at the same moment share one host message: on each thread, their parts
      // for its shards go over as one group (several parts for the same shard among them)
      const together = await Promise.all(Array.from({ length: 6 }, () => routed.pull(plan)));
      for (const p of together) expect(Array.from(p.rows[0]!)).toEqual(want);
      const M = N + 3;
      // every part answered by its shard, wherever the message landed: none "not here"
      expect(router.stats).toMatchObject({ hostMessages: M, hostParts: (N + 8) * SHARDS, notHere: 0 });
      expect(router.stats.hostFailures).toBe(0);
      // all four endpoints took some (a member left out of 48 has odds of about 4e-6)
      await waitFor(() => host.status().hostMessages.reduce((x, y) => x + y) === M, { timeoutMs: 5000 });
      const answered = host.status().hostMessages;
      expect(answered.length).toBe(4);
      expect(answered.every((n) => n > 0)).toBe(true);
      // and how busy each of the four threads was over the last second
      await waitFor(() => host.status().busy.length === 4, { timeoutMs: 5000 });
      expect(host.status().busy.every((b) => b >= 0 && b <= 1)).toBe(true);
    } finally {
      await router.stop();
      await host.stop();
    }
  });

  it('a shard thread that dies has its shards restarted from their data dirs, nothing acknowledged lost', async () => {
    const cluster = uniqueName('sthreadx').replace(/[^A-Za-z0-9_-]/g, '');
    const kv = await placeShardsInKv(nats.nc, cluster, ['a', 'a', 'a', 'a']);
    const host = threadedHost(cluster, 2, { hostDeltas: true, deltaIntervalMs: 20 });
    await host.start();
    const c = testShardClient(
      { nc: nats.nc, cluster, shards: SHARDS, spec },
      { timeoutMs: 2000, retry: { attempts: 20, baseMs: 50, maxMs: 250 } },
    );
    const router = testHostRouter({ nc: nats.nc, cluster, shards: SHARDS, spec });
    try {
      await waitFor(() => host.shards.size === SHARDS, { timeoutMs: 10_000 });
      const bt = batch();
      const plan = c.route(bt);
      const push = async (i: number) =>
        c.push(plan, await c.pull(plan), [new Float32Array(60 * DIM).fill(0.2 + 0.1 * i)], {
          id: `p${i}`,
          examples: bt.size,
        });
      for (let i = 0; i < 2; i++) expect((await push(i)).accepted.size).toBe(SHARDS);
      const before = (await c.pull(plan)).rows[0]!.slice();
      // host messages answered so far, by the host's thread and each shard thread
      await router.start(kv);
      await waitFor(() => router.hostOf(0) === 'a', { timeoutMs: 5000 });
      const routed = testShardClient({ nc: nats.nc, cluster, shards: SHARDS, spec }, { router });
      for (let i = 0; i < 12; i++) await routed.pull(routed.route(bt));
      const answered = () => host.status().hostMessages.reduce((x, y) => x + y);
      await waitFor(() => answered() === 12, { timeoutMs: 5000 });
      // a thread's death from outside its shards' code (out of memory, a native fault): its
      // worker ends; the two shards on it fail and the host's next pass starts them again
      const victim = host.shards.get(0)! as unknown as {
        thread: { worker: { terminate(): Promise<number> } };
      };
      const onIt = [...host.shards].filter(
        ([, x]) => (x as unknown as typeof victim).thread === victim.thread,
      );
      expect(onIt.length).toBe(2);
      await victim.thread.worker.terminate();
      const restarted = () =>
        onIt.every(([i, old]) => {
          const now = host.shards.get(i);
          return now !== undefined && now !== old && now.state === 'running';
        });
      await waitFor(restarted, { timeoutMs: 10_000, message: 'the dead thread’s shards started again' });
      expect([...host.shards.values()].map((x) => x.state)).toEqual(Array(SHARDS).fill('running'));
      expect(host.status().threads!.reduce((x, y) => x + y)).toBe(SHARDS);
      // recovered from their logs: the same rows, and what was acknowledged is there once
      expect(Array.from((await c.pull(plan)).rows[0]!)).toEqual(Array.from(before));
      const again = await push(1);
      expect(again.duplicates).toBe(SHARDS);
      // the host's deltas no longer wait for the dead thread: the next push's deltas go out
      await new Promise((r) => setTimeout(r, 100));
      const sent = host.status().hostDeltas!.messages;
      expect((await push(2)).accepted.size).toBe(SHARDS);
      await waitFor(() => host.status().hostDeltas!.messages > sent, { timeoutMs: 5000 });
      await waitFor(() => [...host.shards.values()].every((x) => x.status().version === 3), {
        timeoutMs: 5000,
      });
      // the dead thread's count is kept: the host's total never goes back
      expect(answered()).toBeGreaterThanOrEqual(12);
    } finally {
      await router.stop();
      await host.stop();
    }
  });
});
