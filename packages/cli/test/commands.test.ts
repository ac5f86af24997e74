import { afterAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, nkeyAuthenticator } from 'nats';
import { startNatsServer, type NatsServerHandle } from '@freshet/nats';
import { spawnChild, uniqueName, waitFor } from '@freshet/testkit';
import { cliMainPath } from '../src/local-cluster.js';

const run = promisify(execFile);
const cli = (...args: string[]) => run(process.execPath, [cliMainPath, ...args], { timeout: 30_000 });
const servers: NatsServerHandle[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
});

describe('freshet config', () => {
  it('auth writes private nkey seed files and a config nats-server enforces', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freshet-auth-cmd-'));
    const cluster = uniqueName('cfg').replace(/-/g, '_');
    const { stdout } = await cli('config', 'auth', '--cluster', cluster, '--out', dir);
    expect(stdout).toMatch(new RegExp(`publisher\\s+nkey U[A-Z0-9]+\\s+inbox _INBOX_${cluster}_publisher`));
    expect((await stat(join(dir, 'admin.nk'))).mode & 0o077).toBe(0);
    expect((await stat(join(dir, 'auth.conf'))).mode & 0o077).toBe(0);
    // (nats-server resolves `include` relative to its own config file, so the text goes inline.)
    const server = await startNatsServer({ extraConfig: await readFile(join(dir, 'auth.conf'), 'utf8') });
    servers.push(server);
    const seed = new TextEncoder().encode((await readFile(join(dir, 'publisher.nk'), 'utf8')).trim());
    const nc = await connect({
      servers: server.url,
      authenticator: nkeyAuthenticator(seed),
      inboxPrefix: `_INBOX_${cluster}_publisher`,
    });
    await expect(
      nc.request(`freshet.${cluster}.ps.0.push`, new Uint8Array(), { timeout: 2000 }),
    ).rejects.toThrow(/Permissions Violation/);
    await nc.close();
    await expect(connect({ servers: server.url })).rejects.toThrow(/auth/i);
  });

  it('show prints the resolved config with every actor’s options', async () => {
    const { stdout } = await cli('config', 'show', '--json');
    const c = JSON.parse(stdout) as {
      cluster: string;
      actors: Array<{ id: string; options: Record<string, unknown> }>;
    };
    expect(c.cluster).toBe('local');
    expect(c.actors.map((a) => a.id)).toEqual(['shard-0', 'shard-1', 'worker-0', 'serving-0']);
    expect(c.actors[0]!.options).toMatchObject({ shard: 0, shards: 2, model: { tables: expect.any(Array) } });
    await expect(cli('config', 'show', '--config', '/nonexistent.yaml')).rejects.toMatchObject({
      stderr: expect.stringMatching(/cannot read cluster config \/nonexistent\.yaml/),
    });
  });
});

describe('freshet status --watch', () => {
  it('refreshes until Ctrl-C and exits cleanly', async () => {
    const server = await startNatsServer();
    servers.push(server);
    const w = spawnChild(process.execPath, [
      cliMainPath,
      'status',
      '--nats',
      server.url,
      '--json',
      '--watch',
      '0.2',
    ]);
    await waitFor(
      () =>
        w
          .output()
          .split('\n')
          .filter((l) => l.startsWith('{"cluster"')).length >= 3,
      {
        message: () => `three refreshes; output:\n${w.output()}`,
      },
    );
    w.child.kill('SIGINT');
    expect(await w.exited).toBe(0);
  });
});

describe('freshet bench scaling', () => {
  it('refuses an unreadable or non-JSON --held-out file with CONFIG before measuring anything', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freshet-scaling-'));
    const fit = join(dir, 'fit.json');
    const bad = join(dir, 'bad.json');
    await writeFile(
      fit,
      JSON.stringify({
        bench: 'cluster',
        shards: 2,
        workers: 1,
        serving: 1,
        batch: 256,
        examples_per_s: 1000,
      }),
    );
    await writeFile(bad, 'not json');
    const data = ['--data', `criteo:${join(dir, 'none.txt')}`, '--calibrate-with', fit];
    await expect(cli('bench', 'scaling', ...data, '--held-out', bad)).rejects.toMatchObject({
      stderr: expect.stringMatching(/--held-out .*bad\.json: not JSON/),
    });
    await expect(
      cli('bench', 'scaling', ...data, '--held-out', join(dir, 'missing.json')),
    ).rejects.toMatchObject({
      stderr: expect.stringMatching(/--held-out .*missing\.json: ENOENT/),
    });
    // JSON, but not a bench cluster result: named by its place among the held-out results
    await writeFile(bad, JSON.stringify({ bench: 'wire' }));
    await expect(cli('bench', 'scaling', ...data, '--held-out', bad)).rejects.toMatchObject({
      stderr: expect.stringMatching(/held-out result 1: not a bench cluster result/),
    });
  });
});

describe('freshet dict', () => {
  it('builds a dictionary from sample events, stores it once, lists it, and a replay compresses with it', async () => {
    const server = await startNatsServer();
    servers.push(server);
    const dir = await mkdtemp(join(tmpdir(), 'freshet-dict-'));
    const file = join(dir, 'dict.bin');
    const cluster = uniqueName('dict');
    const built = await cli(
      'dict',
      'build',
      '--data',
      'synthetic',
      '--samples',
      '300',
      '--encoding',
      'msgpack',
      '--out',
      file,
    );
    const id = /dictionary ([0-9a-f]{8}), (\d+) bytes/.exec(built.stdout);
    expect(id).not.toBeNull();
    expect((await stat(file)).size).toBe(Number(id![2]));
    const put = ['--nats', server.url, '--cluster', cluster];
    expect((await cli('dict', 'put', file, ...put)).stdout).toContain(`stored dictionary ${id![1]}`);
    // idempotent: the same bytes again
    expect((await cli('dict', 'put', file, ...put)).stdout).toContain(`stored dictionary ${id![1]}`);
    const listed = JSON.parse((await cli('dict', 'list', ...put, '--json')).stdout) as {
      id: string;
      bytes: number;
    }[];
    expect(listed).toEqual([expect.objectContaining({ id: id![1], bytes: Number(id![2]) })]);
    const { stdout } = await cli(
      'replay',
      '--data',
      'synthetic',
      '--limit',
      '200',
      '--encoding',
      'msgpack',
      '--dictionary',
      file,
      '--json',
      ...put,
    );
    expect(JSON.parse(stdout)).toMatchObject({ events: 200, acked: 200, failed: 0 });
    // what the stream holds: zlib streams naming the dictionary
    const nc = await connect({ servers: server.url });
    try {
      const jsm = await nc.jetstreamManager();
      const stream = (await jsm.streams.list().next()).find((s) => s.config.name.startsWith('FRESHET_FB_'))!;
      const first = await jsm.streams.getMessage(stream.config.name, { seq: 1 });
      expect(first.data[0]).toBe(0x78);
      expect(
        ((first.data[2]! << 24) | (first.data[3]! << 16) | (first.data[4]! << 8) | first.data[5]!) >>> 0,
      ).toBe(parseInt(id![1]!, 16));
    } finally {
      await nc.close();
    }
  });
});
