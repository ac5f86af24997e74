import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureStream } from '@freshet/client';
import { kvKeys } from '@freshet/nats';
import { createModel, type ModelConfigInput } from '@freshet/model';
import { featureId, forgottenUserKey, partitionOf, subjects, type AdminRequest } from '@freshet/protocol';
import { startServing } from '@freshet/serving';
import { startShard, type Shard } from '@freshet/shard';
import { ForgottenUsers, startWorker } from '@freshet/worker';
import { uniqueName, useNats, waitFor } from '@freshet/testkit';
import { answerAdmin, type RoleAdmin } from '../src/role-admin.js';
import {
  forgetUser,
  shardForgetHandler,
  userCommand,
  workerForgetHandler,
  type ForgetReport,
} from '../src/commands/user-forget.js';

// `freshet user forget` against real actors on a real nats-server (in-process, like the walking
// skeleton; the admin commands go over NATS as the role processes answer them): two users train
// an FM; one is forgotten; its rows leave both shards and the serving replica, its pending
// impression leaves the joiner, its new and replayed events are dropped, a shard restarted from
// its log stays without them, and the other user is untouched.
/** An FM on a user and an item field. */
const userItemFm = {
  name: 'forget',
  kind: 'fm',
  embeddingDim: 4,
  features: {
    fields: [
      { kind: 'categorical', name: 'user' },
      { kind: 'categorical', name: 'item', tower: 'item' },
    ],
  },
} satisfies ModelConfigInput;

describe('freshet user forget', () => {
  const nats = useNats();
  const stops: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  });

  it("removes a user's rows everywhere and keeps them out", async () => {
    const cluster = uniqueName('forget');
    const s = subjects(cluster);
    const partitions = 2;
    const model: ModelConfigInput = { ...userItemFm, optimizer: { kind: 'adam', lr: 0.05 } };
    const spec = createModel(model).spec;
    const sparse = spec.tables.flatMap((t, id) => (t.kind === 'sparse' ? [id] : []));
    expect(sparse.length).toBe(2); // linear weights and embeddings
    const dir = await mkdtemp(join(tmpdir(), 'freshet-forget-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    await ensureStream(nats.nc, { cluster, partitions });

    const admins: RoleAdmin[] = [];
    stops.push(async () => {
      for (const a of admins) await a.close();
    });
    const shardOpts = (shard: number) => ({
      cluster,
      shard,
      shards: 2,
      nats: { servers: nats.url },
      model: spec,
      dataDir: join(dir, `shard-${shard}`),
    });
    const shards: Shard[] = [];
    for (const i of [0, 1]) {
      const sh = await startShard(shardOpts(i));
      shards.push(sh);
      stops.push(() => sh.stop());
      const forget = shardForgetHandler(sh);
      admins.push(
        answerAdmin(nats.nc, { cluster, role: 'shard', id: sh.id, nats: {}, handlers: { forget } }),
      );
    }
    const serving = await startServing({ cluster, shards: 2, nats: { servers: nats.url }, model });
    stops.push(() => serving.stop());
    await waitFor(() => serving.status().ready, { message: 'serving ready' });
    const worker = await startWorker({
      cluster,
      nats: { servers: nats.url },
      model,
      shards: 2,
      partitions,
      batch: { size: 8, maxWaitMs: 5 },
      joiner: { windowMs: 600_000 },
    });
    stops.push(() => worker.stop());
    const forget = workerForgetHandler(worker);
    admins.push(
      answerAdmin(nats.nc, { cluster, role: 'worker', id: worker.id, nats: {}, handlers: { forget } }),
    );

    const js = nats.nc.jetstream();
    const examples = (user: string, n: number, tag: string) =>
      Array.from({ length: n }, (_, i) => ({
        v: 1,
        kind: 'example',
        id: `${tag}-${user}-${i}`,
        ts: Date.now(),
        user,
        item: `item-${i % 3}`,
        label: i % 2,
        features: { user, item: `item-${i % 3}` },
      }));
    const publish = async (events: Record<string, unknown>[], msgSuffix = '') => {
      for (const e of events) {
        const subject =
          e.kind === 'example'
            ? s.labels(partitionOf(e.user as string, partitions))
            : s.feedback(partitionOf(e.user as string, partitions));
        await js.publish(subject, JSON.stringify(e), { msgID: `${e.id as string}${msgSuffix}` });
      }
    };
    const key = (user: string) => {
      const k = new Uint32Array(2);
      featureId('user', user, k);
      return k;
    };
    const onShards = (user: string) => {
      const k = key(user);
      let n = 0;
      for (const sh of shards)
        for (const t of sparse) if (sh.core.tables[t]!.store.find(k[0]!, k[1]!) >= 0) n++;
      return n;
    };
    const onServing = (user: string) => {
      const k = key(user);
      return sparse.filter((t) => serving.replica.has(t, k[0]!, k[1]!)).length;
    };

    const aliceOld = examples('alice', 12, 'old');
    await publish([...aliceOld, ...examples('bob', 12, 'old')]);
    // a pending impression of alice's (the window is long): joiner state the forget must drop
    await publish([
      { v: 1, kind: 'impression', id: 'imp-alice', ts: Date.now(), user: 'alice', request: 'r1', item: 'x' },
    ]);
    await waitFor(
      () =>
        onShards('alice') === sparse.length &&
        onShards('bob') === sparse.length &&
        onServing('alice') === sparse.length &&
        onServing('bob') === sparse.length &&
        worker.status().joiner.pending === 1,
      { timeoutMs: 30_000, message: 'both users trained, on the shards and on serving' },
    );

    const report = await forgetUser(nats.nc, cluster, 'alice', { settleMs: 300 });
    expect(report.failed).toEqual([]);
    const removed = Object.values(report.shards).flatMap((per) => Object.values(per));
    expect(removed.reduce((a, b) => a + b, 0)).toBe(sparse.length);
    expect(Object.keys(report.shards).sort()).toEqual(['shard-0', 'shard-1']);
    expect(report.workers[worker.id]).toMatchObject({ joiner: { pending: 1 } });
    expect(worker.status().joiner.pending).toBe(0);

    // the deletion is recorded (a hash, not the id) and a worker started later would load it
    const kv = await js.views.kv(s.kvBucket, { bindOnly: true });
    const entry = await kv.get(forgottenUserKey('alice'));
    expect(entry?.operation).toBe('PUT');
    expect(entry!.string()).not.toContain('alice');
    const later = new ForgottenUsers();
    const jsm = await nats.nc.jetstreamManager();
    expect(await later.load((filter) => kvKeys(jsm, s.kvBucket, filter))).toBe(1);
    expect(later.has('alice') && !later.has('bob')).toBe(true);

    expect(onShards('alice')).toBe(0);
    expect(onShards('bob')).toBe(sparse.length);
    await waitFor(() => onServing('alice') === 0, { message: 'tombstones reach serving' });
    expect(onServing('bob')).toBe(sparse.length);

    // new events of alice's, and a replay of the old ones, are dropped; bob still learns
    const bobVersion = () => shards.reduce((a, sh) => a + sh.status().version, 0);
    const v0 = bobVersion();
    await publish([...examples('alice', 6, 'new'), ...aliceOld], '-replay');
    await publish(examples('bob', 6, 'new'));
    await waitFor(() => worker.status().forgotten.droppedEvents === 18 && bobVersion() > v0, {
      timeoutMs: 20_000,
      message: "alice's events dropped, bob's applied",
    });
    expect(worker.status().forgotten).toEqual({ users: 1, droppedEvents: 18 });
    expect(onShards('alice')).toBe(0);
    expect(onServing('alice')).toBe(0);

    // a shard restarted from its data dir: from a copy taken while it runs (a crash: every push,
    // then the logged eviction, replayed from the log), and after a clean stop (a checkpoint)
    const k = key('alice');
    const owner = shards.findIndex((sh) => sparse.some((t) => sh.core.tables[t]!.evicted > 0));
    expect(owner).toBeGreaterThanOrEqual(0);
    const crashDir = join(dir, 'crash-copy');
    await cp(join(dir, `shard-${owner}`), crashDir, { recursive: true });
    const restarted = async (o: ReturnType<typeof shardOpts>) => {
      const sh = await startShard(o);
      stops.push(() => sh.stop());
      for (const t of sparse) expect(sh.core.tables[t]!.store.find(k[0]!, k[1]!)).toBeLessThan(0);
      return sh;
    };
    // another cluster name: the copy must not answer this cluster's pulls
    const crashed = await restarted({
      ...shardOpts(owner),
      cluster: uniqueName('forget-crash'),
      dataDir: crashDir,
    });
    expect(crashed.restore!.replayedRecords).toBeGreaterThan(0);
    await crashed.stop();
    await shards[owner]!.stop();
    shards[owner] = await restarted(shardOpts(owner));
    expect(onShards('bob')).toBe(sparse.length);
    await admins[owner]!.close();
    admins[owner] = answerAdmin(nats.nc, {
      cluster,
      role: 'shard',
      id: shards[owner]!.id,
      nats: {},
      handlers: { forget: shardForgetHandler(shards[owner]!) },
    });

    // the command line: `freshet user forget bob --json` prints the report
    const out: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string) => (
      out.push(String(chunk)),
      true
    )) as typeof process.stdout.write;
    try {
      await userCommand().parseAsync(
        ['forget', 'bob', '--nats', nats.url, '--cluster', cluster, '--settle-ms', '0', '--json'],
        { from: 'user' },
      );
    } finally {
      process.stdout.write = write;
    }
    const printed = JSON.parse(out.join('')) as ForgetReport;
    expect(printed).toMatchObject({
      user: 'bob',
      kvKey: forgottenUserKey('bob'),
      failed: [],
      notRemovable: [],
    });
    const bobRows = Object.values(printed.shards).flatMap((per) => Object.values(per));
    expect(bobRows.reduce((a, b) => a + b, 0)).toBe(sparse.length);
    expect(onShards('bob')).toBe(0);
    expect(process.exitCode ?? 0).toBe(0);

    // a forget without a user id is refused with a code
    const bad = await shardForgetHandler(shards[owner]!)({} as AdminRequest).catch((e: unknown) => e);
    expect(bad).toMatchObject({ code: 'BAD_REQUEST' });
  }, 60_000);

  it('says so, and fails, when the model keeps users in shared rows (hashBuckets)', async () => {
    const cluster = uniqueName('forget-hashed');
    const model: ModelConfigInput = {
      ...userItemFm,
      name: 'forget-hashed',
      features: { ...userItemFm.features, hashBuckets: 1024 },
    };
    const dir = await mkdtemp(join(tmpdir(), 'freshet-forget-hashed-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    await ensureStream(nats.nc, { cluster, partitions: 1 });
    const shard = await startShard({
      cluster,
      shard: 0,
      shards: 1,
      nats: { servers: nats.url },
      model: createModel(model).spec,
      dataDir: join(dir, 'shard-0'),
    });
    stops.push(() => shard.stop());
    const worker = await startWorker({
      cluster,
      nats: { servers: nats.url },
      model,
      shards: 1,
      partitions: 1,
    });
    stops.push(() => worker.stop());
    const admins = [
      answerAdmin(nats.nc, {
        cluster,
        role: 'shard',
        id: shard.id,
        nats: {},
        handlers: { forget: shardForgetHandler(shard) },
      }),
      answerAdmin(nats.nc, {
        cluster,
        role: 'worker',
        id: worker.id,
        nats: {},
        handlers: { forget: workerForgetHandler(worker) },
      }),
    ];
    stops.push(async () => {
      for (const a of admins) await a.close();
    });
    const r = await forgetUser(nats.nc, cluster, 'carol', { settleMs: 0 });
    expect(r.failed).toEqual([]);
    expect(r.workers[worker.id]).toMatchObject({ hashBuckets: 1024 });
    expect(r.notRemovable).toHaveLength(1);
    expect(r.notRemovable[0]).toMatch(
      /1024 shared rows \(hashBuckets, reported by .*\): the user's rows are shared/,
    );
  }, 60_000);
});
