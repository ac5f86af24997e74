import { execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { streamPartitions } from '@freshet/client';
import { createModel } from '@freshet/model';
import { placementKv, readModelSpec, readPlacement } from '@freshet/nats';
import { shardStatusSubject, subjects } from '@freshet/protocol';
import { Shard } from '@freshet/shard';
import { Worker } from '@freshet/worker';
import { uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import { defaultModel } from '../src/cluster-config.js';
import { placeShards } from '../src/shard-placement-ops.js';
import { cliMainPath } from '../src/local-cluster.js';

// `freshet init` against a real nats-server, through the built CLI as an operator runs it: it
// makes the streams, the KV bucket and the model spec, a second run changes nothing, and a change
// a running cluster cannot take is refused before anything is touched. Roles started before init
// wait for it (and stop on SIGTERM while waiting) instead of crash-looping.

const nats = useNats();
const tmp = useTempDirs();
const run = promisify(execFile);

const clusterName = () => uniqueName('init').replace(/[^A-Za-z0-9_-]/g, '');

function writeConfig(cluster: string, over: Record<string, unknown> = {}): string {
  const file = join(tmp('init-config'), 'cluster.yaml');
  const doc = {
    cluster,
    nats: { embedded: 0, urls: [nats.url] },
    partitions: 4,
    stream: { storage: 'memory' },
    shards: { count: 1 },
    model: defaultModel,
    ...over,
  };
  writeFileSync(file, stringify(doc));
  return file;
}

async function init(
  file: string,
  ...flags: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [cliMainPath, 'init', '--config', file, ...flags], {
      encoding: 'utf8',
      env: { ...process.env, FRESHET_NATS_URL: '' },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

/** Everything init owns, as the server holds it (for "nothing changed"). */
async function snapshot(cluster: string) {
  const s = subjects(cluster);
  const jsm = await nats.nc.jetstreamManager();
  const cfg = async (name: string) => {
    const { config } = await jsm.streams.info(name);
    return JSON.stringify(config);
  };
  const kv = await nats.nc.jetstream().views.kv(s.kvBucket, { bindOnly: true });
  return {
    feedback: await cfg(s.feedbackStream),
    deadLetter: await cfg(s.deadLetterStream),
    kv: await cfg(`KV_${s.kvBucket}`),
    specRevision: (await kv.get('model-spec'))?.revision,
  };
}

describe('freshet init', () => {
  it('creates the streams, the KV bucket and the model spec; a second run is a no-op that says so', async () => {
    const cluster = clusterName();
    const s = subjects(cluster);
    const file = writeConfig(cluster);
    const first = await init(file, '--json');
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout)).toEqual({
      cluster,
      changed: true,
      feedbackStream: { name: s.feedbackStream, result: 'created' },
      deadLetterStream: { name: s.deadLetterStream, result: 'created' },
      kvBucket: { name: s.kvBucket, result: 'created' },
      modelSpec: { key: 'model-spec', result: 'created' },
    });
    expect(await streamPartitions(nats.nc, cluster)).toBe(4);
    // the spec shards read is the one the config's model makes
    const stored = await readModelSpec(nats.nc, cluster);
    expect(stored).toEqual({ state: 'present', spec: createModel(defaultModel as never).spec });

    const before = await snapshot(cluster);
    const second = await init(file, '--json');
    expect(second.code).toBe(0);
    const report = JSON.parse(second.stdout) as Record<string, { result: string } | boolean | string>;
    expect(report.changed).toBe(false);
    for (const k of ['feedbackStream', 'deadLetterStream', 'kvBucket', 'modelSpec'])
      expect((report[k] as { result: string }).result, k).toBe('unchanged');
    const third = await init(file);
    expect(third.stdout).toMatch(/already initialised, nothing to do/);
    expect(await snapshot(cluster)).toEqual(before);
  });

  it('with shard hosts, writes the first placement once; a re-run keeps the moves made since', async () => {
    const cluster = clusterName();
    const file = writeConfig(cluster, { shards: { count: 4, hosts: ['shard-0', 'shard-1'] } });
    const first = await init(file, '--json');
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({
      placement: { key: 'shard-placement', result: 'created', epoch: 1 },
    });
    const kv = await placementKv(nats.nc, cluster);
    expect((await readPlacement(kv))!.value.hosts).toEqual(['shard-0', 'shard-0', 'shard-1', 'shard-1']);
    // an operator moves a shard; init again must not move it back
    await placeShards(nats.nc, cluster, { hosts: ['shard-0', 'shard-1', 'shard-2'], wait: false });
    const again = await init(file, '--json');
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({
      changed: false,
      placement: { result: 'unchanged', epoch: 2 },
    });
    expect((await readPlacement(kv))!.value.hosts).toEqual(['shard-0', 'shard-0', 'shard-1', 'shard-2']);
    // the shard count is fixed: a config with another one is refused
    const other = await init(writeConfig(cluster, { shards: { count: 8, hosts: 2 } }));
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/shards: the placement has 4, the config says 8/);
  });

  it('refuses another partition count or table layout with a CONFIG error naming it, and changes nothing', async () => {
    const cluster = clusterName();
    expect((await init(writeConfig(cluster))).code).toBe(0);
    const before = await snapshot(cluster);

    const parts = await init(writeConfig(cluster, { partitions: 8 }), '--json');
    expect(parts.code).not.toBe(0);
    expect(parts.stdout).toBe('');
    expect(parts.stderr).toMatch(/\[CONFIG\] refusing to change cluster/);
    expect(parts.stderr).toMatch(/partitions: stream \S+ has 4, the config says 8/);

    const dim = await init(writeConfig(cluster, { model: { ...defaultModel, embeddingDim: 4 } }));
    expect(dim.code).not.toBe(0);
    expect(dim.stderr).toMatch(/\[CONFIG\].*\n(.*\n)*.*dim 8 -> 4/);

    const opt = await init(
      writeConfig(cluster, {
        partitions: 8,
        model: { ...defaultModel, optimizer: { kind: 'sgd', lr: 0.1 } },
      }),
    );
    expect(opt.code).not.toBe(0);
    // every difference at once, so one edit fixes the config
    expect(opt.stderr).toMatch(/has 4, the config says 8/);
    expect(opt.stderr).toMatch(/optimizer adam -> sgd/);
    expect(await snapshot(cluster)).toEqual(before);
    expect(await streamPartitions(nats.nc, cluster)).toBe(4);

    // a learning rate is not layout: it is updated (shards read it at their next start)
    const lr = await init(
      writeConfig(cluster, { model: { ...defaultModel, optimizer: { kind: 'adam', lr: 0.02 } } }),
      '--json',
    );
    expect(lr.code).toBe(0);
    expect(JSON.parse(lr.stdout)).toMatchObject({ changed: true, modelSpec: { result: 'updated' } });
    const stored = await readModelSpec(nats.nc, cluster);
    expect(stored.state === 'present' && stored.spec.tables[0]!.optimizer).toMatchObject({ lr: 0.02 });
  });

  it('a shard started before init waits, saying to run it, then serves once init has run', async () => {
    const cluster = clusterName();
    const lines: string[] = [];
    const shard = new Shard(
      { cluster, shard: 0, shards: 1 },
      { nc: nats.nc, log: (_level, m) => lines.push(m) },
    );
    const started = shard.start();
    try {
      const waiting = await waitFor(() => lines.find((l) => /run `freshet init/.test(l)), {
        timeoutMs: 10_000,
      });
      expect(waiting).toMatch(new RegExp(`no KV bucket ${subjects(cluster).kvBucket}.*cluster ${cluster}`));
      // still waiting a while later: no timeout, no crash
      await new Promise((r) => setTimeout(r, 1200));
      expect(shard.state).toBe('starting');

      expect((await init(writeConfig(cluster))).code).toBe(0);
      await started;
      expect(shard.state).toBe('running');
      const reply = await nats.nc.request(shardStatusSubject(cluster, 0), new Uint8Array(), {
        timeout: 5000,
      });
      expect(JSON.parse(reply.string())).toMatchObject({ cluster, shard: 0, state: 'running' });
    } finally {
      // stop() also ends a wait that never saw the spec
      await shard.stop();
      await started.catch(() => undefined);
    }
  });

  it('a worker started before init waits for the feedback stream, then runs once init has run', async () => {
    const cluster = clusterName();
    const lines: string[] = [];
    const worker = new Worker(
      { cluster, id: 'w0', shards: 1, partitions: 4, model: defaultModel, compute: { threads: 1 } },
      { nc: nats.nc, log: (level, msg) => lines.push(`${level} ${msg}`) },
    );
    const started = worker.start();
    try {
      await waitFor(
        () => lines.find((l) => /^warn waiting for the feedback stream: run `freshet init/.test(l)),
        {
          timeoutMs: 20_000,
        },
      );
      await new Promise((r) => setTimeout(r, 1200));
      expect(worker.state).toBe('starting');
      expect((await init(writeConfig(cluster))).code).toBe(0);
      await started;
      expect(worker.state).toBe('running');
      await waitFor(() => worker.partitions.length === 4, { timeoutMs: 20_000 });
    } finally {
      await worker.stop(2000);
      await started.catch(() => undefined);
    }
  });

  it('a shard process waiting for init stops cleanly on SIGTERM', async () => {
    const cluster = clusterName();
    const child = spawn(
      process.execPath,
      [cliMainPath, 'shard', '--options-json', JSON.stringify({ cluster, shard: 0, shards: 1 })],
      { env: { ...process.env, FRESHET_NATS_URL: nats.url }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await waitFor(() => /waiting for the model spec/.test(stderr), { timeoutMs: 20_000 });
      child.kill('SIGTERM');
      const t0 = Date.now();
      expect(await exited).toBe(0);
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
