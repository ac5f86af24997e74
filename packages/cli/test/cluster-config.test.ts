import { describe, expect, it } from 'vitest';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  clusterConfigToYaml,
  compileClusterConfig,
  defaultClusterConfig,
  loadClusterConfig,
  natsConnectionOptions,
  parseClusterConfig,
  planActors,
} from '../src/cluster-config.js';

describe('cluster config', () => {
  it('defaults to one embedded nats-server, two shards, one worker, one serving node', () => {
    const c = defaultClusterConfig();
    expect(c.cluster).toBe('local');
    expect(c.nats.embedded).toBe(1);
    expect(c.nats.replicas).toBe(1);
    const plan = planActors(c, ['nats://127.0.0.1:4222']);
    expect(plan.map((a) => a.id)).toEqual(['shard-0', 'shard-1', 'worker-0', 'serving-0']);
    const shard1 = plan[1]!.options;
    expect(shard1).toMatchObject({
      cluster: 'local',
      shard: 1,
      shards: 2,
      nats: { servers: ['nats://127.0.0.1:4222'] },
    });
  });

  it('plans sliced serving: node i holds slice i mod n, every slice held, no more slices than shards', () => {
    const c = compileClusterConfig({ cluster: 'c', shards: { count: 4 }, serving: { count: 5, slices: 2 } });
    const serving = planActors(c, ['nats://127.0.0.1:4222']).filter((a) => a.role === 'serving');
    expect(serving.map((a) => a.options.slice)).toEqual(
      [0, 1, 0, 1, 0].map((index) => ({ index, count: 2 })),
    );
    expect(() => compileClusterConfig({ cluster: 'c', serving: { count: 1, slices: 2 } })).toThrow(
      /every slice needs a node/,
    );
    expect(() =>
      compileClusterConfig({ cluster: 'c', shards: { count: 2 }, serving: { count: 3, slices: 3 } }),
    ).toThrow(/slice.count 3 is more than the 2 shards/);
    // the shards (and shard hosts) split their deltas per slice
    expect(planActors(c, ['nats://127.0.0.1:4222']).find((a) => a.role === 'shard')!.options).toMatchObject({
      servingSlices: 2,
    });
    const hosts = compileClusterConfig({
      cluster: 'c',
      shards: { count: 4, hosts: 2 },
      serving: { count: 2, slices: 2 },
    });
    const host = planActors(hosts, ['nats://127.0.0.1:4222']).find((a) => a.role === 'shard')!;
    expect(host.options).toMatchObject({ shard: { hostDeltas: true, servingSlices: 2 } });
    const whole = planActors(compileClusterConfig({ cluster: 'c' }), ['nats://127.0.0.1:4222']);
    expect(whole.find((a) => a.role === 'serving')!.options.slice).toBeUndefined();
  });

  it('parses YAML with units, 3 embedded servers and replicas, and resolves dataDir against the file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freshet-cfg-'));
    const file = join(dir, 'c.yaml');
    await writeFile(
      file,
      [
        'cluster: prod-a',
        'dataDir: data',
        'nats: { embedded: 3, maxPayload: 16MiB }',
        'partitions: 16',
        'shards: { count: 4, options: { checkpointEveryMs: 1000 } }',
        'workers: { count: 2 }',
      ].join('\n'),
    );
    const c = await loadClusterConfig(file);
    expect(c.nats.maxPayload).toBe(16 * 1024 * 1024);
    expect(c.nats.replicas).toBe(3);
    expect(c.dataDir).toBe(join(dir, 'data'));
    const plan = planActors(
      c,
      ['a', 'b', 'c'].map((h) => `nats://${h}:4222`),
    );
    expect(plan.filter((a) => a.role === 'shard')).toHaveLength(4);
    expect(plan[0]!.options).toMatchObject({
      checkpointEveryMs: 1000,
      dataDir: join(dir, 'data', 'shard-0'),
    });
    expect(plan.find((a) => a.id === 'worker-1')!.options).toMatchObject({ partitions: 16, shards: 4 });
    expect(clusterConfigToYaml(c)).toContain('cluster: prod-a');
  });

  it('rejects bad configs with the path of the offending field and what to do', () => {
    expect(() => parseClusterConfig('nats: { embedded: 2 }')).toThrow(/nats\.embedded/);
    expect(() => parseClusterConfig('shards: { count: -1 }')).toThrow(/shards\.count/);
    expect(() => parseClusterConfig('nats: { embedded: 0 }')).toThrow(
      /set `embedded: 1\|3` or list external `urls`/,
    );
    expect(() => parseClusterConfig('cluster: "a.b"')).toThrow(/cluster name/);
    expect(() => parseClusterConfig('bogus: 1')).toThrow(/bogus/);
    expect(() => parseClusterConfig(': : :')).toThrow(/YAML|invalid/);
    expect(() => compileClusterConfig({ nats: { embedded: 1, replicas: 3 } })).toThrow(/replicas 3 > 1/);
    expect(() =>
      compileClusterConfig({ nats: { embedded: 0, urls: ['nats://127.0.0.1:4222'], persist: true } }),
    ).toThrow(/nats\.persist keeps the store of embedded servers/);
    expect(() => compileClusterConfig({ nats: { embedded: 1, auth: { password: 'x' } } })).toThrow(
      /password/,
    );
  });

  it('takes secrets from the environment by name, never from the file', () => {
    const c = compileClusterConfig({
      nats: { embedded: 0, urls: ['nats://h:4222'], auth: { user: 'w', passEnv: 'MY_PASS' } },
    });
    expect(natsConnectionOptions(c, c.nats.urls, { MY_PASS: 's3cret' })).toMatchObject({
      user: 'w',
      pass: 's3cret',
    });
    expect(() => natsConnectionOptions(c, c.nats.urls, {})).toThrow(/MY_PASS/);
    // The planned options (argv of role processes) never contain the password.
    expect(JSON.stringify(planActors(c, c.nats.urls))).not.toContain('s3cret');
  });
});
