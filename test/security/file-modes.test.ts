import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cliMainPath } from '@freshet/cli';
import { ensureStream } from '@freshet/client';
import { createModel } from '@freshet/model';
import { startShard } from '@freshet/shard';
import { uniqueName, useNats, useTempDirs } from '@freshet/testkit';

// Secrets and the model on disk are private to their owner, also when the files or directories
// existed before with wider modes: `config auth` into an existing directory, a shard's write-ahead
// log and checkpoints in an existing data dir.

const nats = useNats();
const tempDir = useTempDirs();
const stops: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
});
const mode = (p: string) => statSync(p).mode & 0o777;

describe('private files', () => {
  it('`freshet config auth` into an existing directory leaves every file 0600 and the dir 0700', () => {
    const dir = join(tempDir('modes'), 'secrets');
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    // what an older version (or a careless copy) left behind: world-readable
    writeFileSync(join(dir, 'auth.conf'), 'old', { mode: 0o644 });
    writeFileSync(join(dir, 'admin.nk'), 'old', { mode: 0o644 });
    chmodSync(join(dir, 'auth.conf'), 0o644);
    const out = execFileSync(
      process.execPath,
      [
        cliMainPath,
        'config',
        'auth',
        '--cluster',
        'prod',
        '--out',
        dir,
        '--routes',
        'nats-0.nats:6222,nats-1.nats:6222',
      ],
      { encoding: 'utf8' },
    );
    expect(out).toContain('cluster.conf');
    expect(mode(dir)).toBe(0o700);
    const files = readdirSync(dir).sort();
    expect(files).toEqual([
      'admin.nk',
      'app.nk',
      'auth.conf',
      'cluster.conf',
      'labeller.nk',
      'publisher.nk',
      'serving.nk',
      'shard.nk',
      'worker.nk',
    ]);
    for (const f of files) expect(mode(join(dir, f)), f).toBe(0o600);
  });

  it('a shard keeps its data dir 0700 and its log and checkpoints 0600', async () => {
    const cluster = uniqueName('modes');
    await ensureStream(nats.nc, { cluster, partitions: 1, storage: 'memory' });
    const dataDir = join(tempDir('modes'), 'shard');
    mkdirSync(dataDir, { mode: 0o755 });
    chmodSync(dataDir, 0o755);
    const spec = createModel({
      name: 'modes',
      kind: 'lr',
      features: { fields: [{ kind: 'categorical', name: 'user' }] },
    }).spec;
    const shard = await startShard({
      cluster,
      shard: 0,
      shards: 1,
      nats: { servers: nats.url },
      model: spec,
      dataDir,
    });
    stops.push(() => shard.stop());
    await shard.checkpoint();
    expect(mode(dataDir)).toBe(0o700);
    const files = readdirSync(dataDir);
    expect(
      files.some((f) => /ckpt|checkpoint/.test(f)),
      files.join(','),
    ).toBe(true);
    expect(files.length).toBeGreaterThanOrEqual(2);
    for (const f of files) expect(mode(join(dataDir, f)), f).toBe(0o600);
  });
});
