import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parseReadyLine } from '@freshet/nats';
import { subjects } from '@freshet/protocol';
import { ObjectBucket } from '@freshet/shard';
import {
  publishExamples,
  spawnChild,
  uniqueName,
  useNats,
  useTempDirs,
  waitFor,
  type ChildHandle,
} from '@freshet/testkit';
import { createModel } from '@freshet/model';
import {
  faultModel,
  outstanding,
  PushLedger,
  prepareCluster,
  repoRoot,
  shardStatus,
  startRole,
  useRoleProcesses,
  workerOptions,
  workerStatus,
  type RoleProcess,
  servingScores,
} from './fault-kit.js';

/**
 * Model versions (docs/model-versions.md) against real processes: a real nats-server, 2 shard
 * processes (`freshet shard`, which answer the admin commands; checkpoints in the Object Store,
 * keep 1), 1 worker with the guard on, serving nodes, and the `freshet model` commands as child
 * processes. Load: 2 partitions, 3 waves of pre-labelled events (users unique per event, 5
 * items, 2 of them liked): waves 1 and 2 alike, wave 3 with the labels flipped.
 *
 * Counted: (tag) the tag holds one checkpoint per shard and keep-N leaves them while it deletes
 * untagged ones; (rollback, discard) with nothing trained after it, the shards' versions equal
 * the tag's, and a serving node that followed wave 2 scores exactly what it scored at tag time,
 * as does a node started after; (rollback, replay) refused while the worker runs; with it
 * stopped, the shards are back at the tag and the restarted worker applies exactly the 600
 * events of wave 2 again (each once: the push ledger's dense example counts); (guard) flipped labels trip the worker's guard, serving pins and
 * keeps its scores while the shards go on learning, status and /metrics say why, and after
 * `freshet model unpin` the node serves the shards' newer weights (so the pin held them back).
 */
const cli = promisify(execFile);
const PARTS = 2;
const SHARDS = 2;
const WAVE = 600;
/** The fault model with a rate that learns 5 items' labels within a wave. */
const model = { ...faultModel, optimizer: { kind: 'sgd' as const, lr: 0.3 } };
const spec = createModel(model).spec;
const ITEMS = 5;
/** Items 0 and 1 are liked; wave 3 flips that. */
const liked = (k: number) => (k % ITEMS < 2 ? 1 : 0);
const wave = (flipped: boolean) => ({
  label: (k: number) => (flipped ? 1 - liked(k) : liked(k)),
  features: (k: number, user: string) => ({ user, item: `i${k % ITEMS}` }),
  msgId: true,
});

const shardProcs: ChildHandle[] = [];
afterAll(async () => {
  await Promise.all(shardProcs.map((h) => h.stop(3000)));
});

describe('model versions: tag, rollback, guard', () => {
  const nats = useNats();
  useRoleProcesses();
  const tempDir = useTempDirs();

  /** `freshet shard` (the CLI: it answers checkpoint and restore), ready line parsed. */
  async function startShard(cluster: string, shard: number, dir: string): Promise<void> {
    const options = {
      cluster,
      shard,
      shards: SHARDS,
      nats: { servers: nats.url },
      model: spec,
      dataDir: join(dir, `shard-${shard}`),
      checkpoint: { store: 'object-store', keep: 1, walSegmentMs: 0 },
      checkpointIntervalMs: 0,
    };
    const h = spawnChild(
      process.execPath,
      [join(repoRoot, 'packages/cli/dist/main.js'), 'shard', '--options-json', JSON.stringify(options)],
      { cwd: repoRoot },
    );
    shardProcs.push(h);
    await waitFor(
      () => {
        if (h.child.exitCode !== null) throw new Error(`shard exited: ${h.output().slice(-2000)}`);
        return parseReadyLine(h.output()) ?? null;
      },
      { timeoutMs: 30_000, message: () => `shard ready: ${h.output().slice(-2000)}` },
    );
  }

  async function freshet(args: string[]): Promise<Record<string, unknown>> {
    const r = await cli(process.execPath, [join(repoRoot, 'packages/cli/dist/main.js'), ...args, '--json'], {
      cwd: repoRoot,
      env: { ...process.env, FRESHET_NATS_URL: nats.url },
      timeout: 120_000,
    });
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  }

  const pairs = Array.from({ length: 30 }, (_, i) => ({ user: `u${i * 41}`, item: `i${i % ITEMS}` }));
  const scores = (node: RoleProcess) => servingScores(node, pairs);
  const servingStatus = async (node: RoleProcess) =>
    (await (await fetch(`${node.ready.http as string}/v1/status`)).json()) as {
      versions: number[];
      pinned: { reason: string; by: string; logloss: number; baseline: number } | null;
      replica: { deltasHeld: number };
    };
  const shardVersions = async (cluster: string) =>
    Promise.all(
      Array.from({ length: SHARDS }, async (_, i) => (await shardStatus(nats.nc, cluster, i)).version),
    );
  /** Until the node serves every shard's current version. */
  async function converged(cluster: string, node: RoleProcess, what: string): Promise<number[]> {
    let last = '';
    return waitFor(
      async () => {
        const want = await shardVersions(cluster);
        const got = (await servingStatus(node)).versions;
        last = `shards ${want.join(',')}, serving ${got.join(',')}`;
        return want.every((v, i) => got[i] === v) ? want : null;
      },
      { timeoutMs: 30_000, message: () => `${what}: ${last}` },
    );
  }
  async function learned(cluster: string, what: string): Promise<void> {
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTS)) === 0, {
      timeoutMs: 90_000,
      message: what,
    });
  }

  it('tags, rolls back with serving following, and pins serving when logloss degrades', async () => {
    const cluster = uniqueName('mver').replace(/[^A-Za-z0-9_-]/g, '');
    const dir = tempDir('model-versions');
    await prepareCluster(nats.nc, cluster, PARTS);
    await Promise.all([0, 1].map((i) => startShard(cluster, i, dir)));
    const servingOpts = (id: string) => ({
      cluster,
      id,
      shards: SHARDS,
      nats: { servers: nats.url },
      model,
    });
    const s0 = await startRole('serving', servingOpts('s0'));
    const w0Options = workerOptions(cluster, 'w0', SHARDS, PARTS, nats.url, {
      model,
      guard: { enabled: true, windowExamples: 150, baselineWindows: 2, maxRise: 0.3, minRise: 0.05 },
      // the drift detector's rate boost would make the flipped wave's loss fall faster
      lr: { drift: { enabled: false }, plateau: { enabled: false } },
    });
    let w0 = await startRole('worker', w0Options);
    const untrained = await scores(s0);

    // wave 1, then a tag
    await publishExamples(nats.nc, cluster, 0, WAVE, PARTS, wave(false));
    await learned(cluster, 'wave 1 learned');
    const tagVersions = await converged(cluster, s0, 'serving after wave 1');
    const atTag = await scores(s0);
    expect(atTag).not.toEqual(untrained);
    const tag = (await freshet(['model', 'tag', 'v1', '--cluster', cluster])) as {
      checkpoints: { shard: number; object: string; version: number }[];
      stream: { lastSeq: number };
      replayable: boolean;
    };
    // taken with every event acknowledged and nothing in flight: a clean cut
    expect(tag.replayable).toBe(true);
    expect(tag.checkpoints.map((c) => c.shard)).toEqual([0, 1]);
    expect(tag.checkpoints.map((c) => c.version)).toEqual(tagVersions);
    expect(tag.stream.lastSeq).toBe(WAVE);

    // wave 2 (same labelling): the model moves on
    await publishExamples(nats.nc, cluster, WAVE, WAVE, PARTS, wave(false));
    await learned(cluster, 'wave 2 learned');
    const afterWave2 = await converged(cluster, s0, 'serving after wave 2');
    expect(afterWave2.reduce((a, b) => a + b)).toBeGreaterThan(tagVersions.reduce((a, b) => a + b));
    const wave2Scores = await scores(s0);
    expect(wave2Scores).not.toEqual(atTag);

    // two more checkpoints: keep 1 deletes untagged ones, never the tagged
    const bucket = (await ObjectBucket.open(nats.nc, subjects(cluster).objectStore))!;
    for (let k = 0; k < 2; k++) {
      await cli(
        process.execPath,
        [join(repoRoot, 'packages/cli/dist/main.js'), 'checkpoint', '--cluster', cluster],
        {
          cwd: repoRoot,
          env: { ...process.env, FRESHET_NATS_URL: nats.url },
        },
      );
    }
    const objects = async () => (await bucket.list()).map((r) => r.name).filter((n) => n.endsWith('.ckpt'));
    // per shard: the tagged one and the newest (the checkpoint between them went)
    let seen: string[] = [];
    await waitFor(async () => (seen = await objects()).length === 2 * SHARDS, {
      timeoutMs: 30_000,
      message: () => `objects: ${seen.join(', ')}`,
    });
    for (const c of tag.checkpoints) expect(await objects()).toContain(c.object);
    const listed = (await freshet(['model', 'tags', '--cluster', cluster])) as {
      tags: { name: string; missing: number }[];
    };
    expect(listed.tags).toEqual([expect.objectContaining({ name: 'v1', missing: 0 })]);

    // rollback, discard: nothing trained after it, so serving must come back by itself
    const rb = (await freshet(['model', 'rollback', 'v1', '--cluster', cluster])) as {
      results: { ok: boolean; detail: { version: number; versionBefore: number } }[];
    };
    expect(rb.results.every((r) => r.ok)).toBe(true);
    expect(await shardVersions(cluster)).toEqual(tagVersions);
    await converged(cluster, s0, 'serving after the rollback');
    expect(await scores(s0)).toEqual(atTag);
    const s1 = await startRole('serving', servingOpts('s1'));
    await converged(cluster, s1, 'a new serving node after the rollback');
    expect(await scores(s1)).toEqual(atTag);
    // the events stay acknowledged (discard)
    expect(await outstanding(nats.nc, cluster, PARTS)).toBe(0);

    // rollback, replay: refused while a worker runs; then wave 2 is learned again, each event once
    const refused = await freshet(['model', 'rollback', 'v1', '--replay', '--cluster', cluster]).then(
      () => 'ran',
      (e: { stderr?: string }) => e.stderr ?? '',
    );
    expect(refused).toMatch(/no replay: worker\(s\) w0 running/);
    w0.handle.child.kill('SIGTERM');
    expect(await w0.handle.exited).toBe(0);
    const ledger = PushLedger.start(nats.nc, cluster);
    const replay = (await freshet(['model', 'rollback', 'v1', '--replay', '--cluster', cluster])) as {
      rewound: { name: string; startSeq: number }[];
    };
    expect(replay.rewound).toHaveLength(PARTS);
    expect(await shardVersions(cluster)).toEqual(tagVersions);
    w0 = await startRole('worker', w0Options);
    await learned(cluster, 'wave 2 learned again');
    await waitFor(() => ledger.examples() >= WAVE, {
      timeoutMs: 30_000,
      message: () => `${ledger.examples()} replayed`,
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(ledger.examples()).toBe(WAVE);
    expect((await workerStatus(nats.nc, cluster, 'w0')).examples).toBe(WAVE);
    await converged(cluster, s0, 'serving after the replay');
    expect(await scores(s0)).not.toEqual(atTag);

    // wave 3, labels flipped: the guard trips and serving pins
    await publishExamples(nats.nc, cluster, 2 * WAVE, 2 * WAVE, PARTS, wave(true));
    let guard = '';
    const pinned = await waitFor(
      async () => {
        guard = JSON.stringify((await workerStatus(nats.nc, cluster, 'w0')).guard);
        return (await servingStatus(s0)).pinned;
      },
      { timeoutMs: 60_000, message: () => `serving pinned (worker guard: ${guard})` },
    );
    expect(pinned.by).toBe('w0');
    expect(pinned.logloss).toBeGreaterThan(pinned.baseline * 1.3);
    expect(pinned.reason).toMatch(/progressive logloss/);
    const atPin = await scores(s0);
    const versionsAtPin = (await servingStatus(s0)).versions;
    await learned(cluster, 'wave 3 learned');
    // the shards went on learning; the pinned node did not follow
    await waitFor(async () => (await shardVersions(cluster)).some((v, i) => v > versionsAtPin[i]!), {
      timeoutMs: 30_000,
      message: 'shards moved past the pin',
    });
    await new Promise((r) => setTimeout(r, 500));
    expect((await servingStatus(s0)).versions).toEqual(versionsAtPin);
    expect(await scores(s0)).toEqual(atPin);
    expect((await servingStatus(s0)).replica.deltasHeld).toBeGreaterThan(0);
    const metrics = await (await fetch(`${s0.ready.http as string}/metrics`)).text();
    expect(metrics).toMatch(/freshet_serving_pinned\{[^}]*\} 1/);
    const status = (await freshet(['status', '--cluster', cluster])) as { pinned: { by: string } | null };
    expect(status.pinned?.by).toBe('w0');

    // unpin: serving takes the shards' newer weights
    await freshet(['model', 'unpin', '--cluster', cluster]);
    await converged(cluster, s0, 'serving after unpin');
    expect((await servingStatus(s0)).pinned).toBeNull();
    expect(await scores(s0)).not.toEqual(atPin);
    expect(await scores(s0)).toEqual(await scores(s1));
  }, 300_000);
});
