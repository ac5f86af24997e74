import { describe, expect, it } from 'vitest';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseReadyLine } from '@freshet/nats';
import { FreshetError } from '@freshet/protocol';
import { spawnChild, uniqueName, useNats, waitFor } from '@freshet/testkit';
import { compileClusterConfig, planActors } from '../src/cluster-config.js';
import { cliMainPath } from '../src/local-cluster.js';
import { shardIndexFromEnv } from '../src/shard-index.js';

// `freshet shard --index-from-env POD_NAME`: a StatefulSet pod takes its shard index from its
// own name (deploy/k8s/base/shard.yaml), so one pod template serves every shard.
function configError(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(FreshetError);
    expect((e as FreshetError).code).toBe('CONFIG');
    return (e as Error).message;
  }
  throw new Error('expected a CONFIG error');
}

describe('shardIndexFromEnv', () => {
  const opts = { cluster: 'prod', shards: 3 };

  it("takes the index from the trailing ordinal of the pod's name", () => {
    expect(shardIndexFromEnv(opts, 'POD_NAME', { POD_NAME: 'shard-0' })).toEqual({ ...opts, shard: 0 });
    expect(shardIndexFromEnv(opts, 'POD_NAME', { POD_NAME: 'freshet-shard-2' }).shard).toBe(2);
    expect(shardIndexFromEnv({ cluster: 'x' }, 'HOST', { HOST: 'shard-17' }).shard).toBe(17);
  });

  it('refuses an unset variable, a name without an ordinal, a second source and an index out of range', () => {
    expect(configError(() => shardIndexFromEnv(opts, 'POD_NAME', {}))).toMatch(
      /POD_NAME is not set .*fieldPath: metadata\.name/,
    );
    expect(configError(() => shardIndexFromEnv(opts, 'POD_NAME', { POD_NAME: 'shard' }))).toMatch(
      /POD_NAME=shard does not end in -<ordinal>/,
    );
    expect(configError(() => shardIndexFromEnv(opts, 'POD_NAME', { POD_NAME: 'shard-1x' }))).toMatch(
      /does not end in -<ordinal>/,
    );
    expect(
      configError(() => shardIndexFromEnv({ ...opts, shard: 0 }, 'POD_NAME', { POD_NAME: 'shard-1' })),
    ).toMatch(/the options name shard 0 too/);
    expect(configError(() => shardIndexFromEnv(opts, 'POD_NAME', { POD_NAME: 'shard-3' }))).toMatch(
      /POD_NAME=shard-3 is shard 3, but the options say shards: 3 \(the StatefulSet's replicas must equal shards\)/,
    );
  });
});

describe('freshet shard --index-from-env', () => {
  const nats = useNats();

  async function shardOptions(): Promise<Record<string, unknown>> {
    const cfg = compileClusterConfig({
      cluster: uniqueName('sidx'),
      dataDir: await mkdtemp(join(tmpdir(), 'freshet-sidx-')),
      shards: { count: 2 },
    });
    const plan = planActors(cfg, [nats.url]).find((p) => p.id === 'shard-1')!;
    const { shard: _shard, ...options } = plan.options;
    return options;
  }

  it('starts the shard whose index the pod name carries', async () => {
    const options = await shardOptions();
    const p = spawnChild(
      process.execPath,
      [cliMainPath, 'shard', '--options-json', JSON.stringify(options), '--index-from-env', 'POD_NAME'],
      { env: { ...process.env, POD_NAME: 'shard-1' } },
    );
    await waitFor(() => parseReadyLine(p.output()) !== undefined || p.child.exitCode !== null, {
      timeoutMs: 60_000,
    });
    expect(parseReadyLine(p.output())?.id, p.output()).toBe('shard-1');
    expect(await p.stop()).toBe(0);
  }, 90_000);

  it('exits 2 with the CONFIG message when the pod name is past the shard count', async () => {
    const options = await shardOptions();
    const p = spawnChild(
      process.execPath,
      [cliMainPath, 'shard', '--options-json', JSON.stringify(options), '--index-from-env', 'POD_NAME'],
      { env: { ...process.env, POD_NAME: 'shard-2' } },
    );
    expect(await p.exited).toBe(2);
    expect(p.output()).toContain('POD_NAME=shard-2 is shard 2, but the options say shards: 2');
  }, 30_000);
});
