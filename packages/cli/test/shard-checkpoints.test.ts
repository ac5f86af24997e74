import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '@freshet/nats';
import { encodePush, shardOfKey, subjects } from '@freshet/protocol';
import { Shard } from '@freshet/shard';
import { uniqueName, useTempDirs, waitFor } from '@freshet/testkit';
import { compileClusterConfig } from '../src/cluster-config.js';
import { cliMainPath } from '../src/local-cluster.js';
import { authorizationBlock, generateNatsAuth, type GeneratedAuth, type NatsRole } from '../src/nats-auth.js';

// Shard checkpoints in the Object Store under the generated per-role NATS users (upload, keep-N
// deletion, restore on an empty data dir, all as the shard role), listed by
// `freshet shard checkpoints` as the admin role, through the built CLI.

const run = promisify(execFile);
const tempDir = useTempDirs();
const cluster = uniqueName('ckcli').replace(/-/g, '_');
let server: NatsServerHandle;
let auth: GeneratedAuth;
const conns: NatsConnection[] = [];

async function as(role: NatsRole): Promise<{ nc: NatsConnection; violations: string[] }> {
  const { seed, inboxPrefix } = auth.users[role];
  const nc = await connect({
    servers: server.url,
    authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)),
    inboxPrefix,
  });
  conns.push(nc);
  const violations: string[] = [];
  void (async () => {
    for await (const s of nc.status()) {
      if (/permission/i.test(JSON.stringify(s))) violations.push(JSON.stringify(s));
    }
  })();
  return { nc, violations };
}

beforeAll(async () => {
  auth = generateNatsAuth({ cluster });
  server = await startNatsServer({ extraConfig: authorizationBlock(auth.entries) });
});
afterAll(async () => {
  await Promise.allSettled(conns.map((c) => c.close()));
  await server?.stop();
});

const model = {
  name: 'ckcli',
  tables: [{ name: 'emb', dim: 4, optimizer: { kind: 'adagrad', lr: 0.1 }, staleness: { policy: 'none' } }],
};

function shardWith(nc: NatsConnection, dataDir: string, logs: string[]) {
  return new Shard(
    {
      cluster,
      shard: 1,
      shards: 2,
      nats: { servers: server.url },
      model,
      dataDir,
      fsync: false,
      checkpointIntervalMs: 0,
      checkpoint: { store: 'object-store', keep: 2 },
    },
    { nc, log: (level, msg) => logs.push(`${level} ${msg}`) },
  );
}

/** Keys (lo, hi pairs) that shard 0 of 2 owns. */
const ownedKeys = (() => {
  const out: number[] = [];
  for (let lo = 1; out.length < 8; lo++) if (shardOfKey(0, lo, 0, 2) === 0) out.push(lo, 0);
  return new Uint32Array(out);
})();

async function cli(...args: string[]) {
  const seedFile = join(tempDir('ckcli-seed'), 'admin.nk');
  writeFileSync(seedFile, auth.users.admin.seed, { mode: 0o600 });
  const r = await run(
    process.execPath,
    [cliMainPath, 'shard', 'checkpoints', ...args, '--nats', server.url],
    {
      encoding: 'utf8',
      env: {
        ...process.env,
        FRESHET_NATS_URL: '',
        FRESHET_NATS_NKEY_FILE: seedFile,
        FRESHET_NATS_INBOX_PREFIX: auth.users.admin.inboxPrefix,
      },
    },
  );
  return r.stdout;
}

describe('checkpoint options in a cluster config', () => {
  const base = {
    cluster: 'c',
    model: { kind: 'lr', features: { fields: [{ name: 'u', kind: 'categorical' }] } },
  };
  it("reach the shards through the shard role's own schema; a bad one names its path", () => {
    const checkpoint = { store: 'object-store', keep: 5, walSegmentMs: 2000 };
    const cfg = compileClusterConfig(
      { ...base, shards: { count: 2, options: { checkpoint } } },
      { baseDir: '.' },
    );
    expect(cfg.shards.options).toEqual({ checkpoint });
    expect(() =>
      compileClusterConfig(
        { ...base, shards: { count: 2, options: { checkpoint: { store: 's3' } } } },
        { baseDir: '.' },
      ),
    ).toThrow(/shards\.options for shard-0[\s\S]*checkpoint\.store/);
  });
});

describe('freshet shard checkpoints', () => {
  it('says so when no shard has uploaded one (and creates no bucket)', async () => {
    expect(await cli('--cluster', cluster)).toMatch(/no bucket freshet_ckpt_.*checkpoint\.store/);
    const out = JSON.parse(await cli('--cluster', cluster, '--json')) as { exists: boolean; checkpoints: [] };
    expect(out).toEqual({
      bucket: subjects(cluster).objectStore,
      exists: false,
      checkpoints: [],
      segments: [],
    });
  });

  it('lists what a shard under its own NATS user uploaded, pruned and restores from', async () => {
    const { nc, violations } = await as('shard');
    const logs: string[] = [];
    const a = shardWith(nc, tempDir('ckcli-a'), logs);
    await a.start();
    for (let i = 0; i < 3; i++) {
      await a.checkpoint();
      // one upload each (checkpoints taken during an upload are coalesced into the next one)
      const seg = a.status().lastCheckpoint!.segment;
      await waitFor(() => a.uploader?.stats.segment === seg, { message: `upload of ${seg}` });
    }
    await a.stop(); // a fourth, final checkpoint; keep 2 deletes two
    expect(a.uploader?.stats.failures).toBe(0);
    expect(logs.filter((l) => l.startsWith('warn') || l.startsWith('error'))).toEqual([]);
    const last = a.status().lastCheckpoint!.segment;

    const out = JSON.parse(await cli('--cluster', cluster, '--json')) as {
      exists: boolean;
      checkpoints: { shard: number; segment: number; shards: number; sha256: string; problem?: string }[];
    };
    expect(out.exists).toBe(true);
    expect(out.checkpoints.map((c) => [c.shard, c.segment, c.shards, c.problem])).toEqual([
      [1, last, 2, undefined],
      [1, last - 1, 2, undefined],
    ]);
    expect(out.checkpoints[0]!.sha256).toMatch(/^[0-9a-f]{64}$/);
    const text = await cli('--cluster', cluster, '--shard', '1');
    expect(text.split('\n')[0]).toMatch(/^shard\s+segment\s+version\s+deltaSeq\s+size/);
    expect(text).toMatch(new RegExp(`^1\\s+${last}\\s+0\\s+0\\s+.*\\sok$`, 'm'));
    expect(await cli('--cluster', cluster, '--shard', '0')).not.toMatch(/^1\s/m);

    // the deleted checkpoints' chunks are gone too (purging needs its own permission)
    const { nc: adminNc } = await as('admin');
    const jsm = await adminNc.jetstreamManager();
    const si = await jsm.streams.info(`OBJ_${subjects(cluster).objectStore}`);
    // two live objects of one chunk each + four info messages (two of them deletion markers)
    expect(si.state.messages).toBe(6);

    const b = shardWith(nc, tempDir('ckcli-b'), logs);
    await b.start();
    expect(b.restore).toMatchObject({ checkpointSource: 'object-store', checkpointSegment: last });
    await b.stop();
    expect(violations).toEqual([]);
  });

  it('lists the log segments a running shard mirrored after its checkpoint', async () => {
    const { nc, violations } = await as('shard');
    const { nc: worker } = await as('worker');
    const logs: string[] = [];
    const shard = new Shard(
      {
        cluster,
        shard: 0,
        shards: 2,
        nats: { servers: server.url },
        model,
        dataDir: tempDir('ckcli-c'),
        fsync: false,
        checkpointIntervalMs: 0,
        maintenanceIntervalMs: 20,
        checkpoint: { store: 'object-store', walSegmentMs: 50 },
      },
      { nc, log: (level, msg) => logs.push(`${level} ${msg}`) },
    );
    await shard.start();
    try {
      await shard.checkpoint();
      for (let i = 0; i < 3; i++) {
        const push = encodePush({
          id: `w${i}`,
          worker: 'w',
          clock: i,
          base: i,
          // keys owned by shard 0 of 2
          tables: [
            {
              t: 0,
              dim: 4,
              keys: ownedKeys,
              grads: new Float32Array(ownedKeys.length * 2).fill(0.1),
              counts: new Uint32Array(ownedKeys.length / 2).fill(1),
            },
          ],
        });
        await worker.request(subjects(cluster).push(0), push, { timeout: 5000 });
      }
      type Listed = { segments: { shard: number; segment: number; version: number }[] };
      const listed = async () =>
        JSON.parse(await cli('--cluster', cluster, '--shard', '0', '--json')) as Listed;
      const out = await waitFor(
        async () => {
          const l = await listed();
          return l.segments.at(-1)?.version === 3 ? l : undefined;
        },
        { message: () => `segments up to version 3: ${logs.join('; ')}` },
      );
      const versions = out.segments.map((x) => x.version);
      expect(versions).toEqual([...versions].sort((a, b) => a - b));
      expect(out.segments.every((x) => x.shard === 0)).toBe(true);
      expect(await cli('--cluster', cluster, '--shard', '0')).toMatch(
        /^shard 0: log segments \d+-\d+ mirrored, up to version 3$/m,
      );
      expect(violations).toEqual([]);
    } finally {
      await shard.stop();
    }
  });
});
