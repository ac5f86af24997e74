import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { spawnChild, uniqueName, waitFor, isAlive } from '@freshet/testkit';
import type { ClusterView } from '@freshet/cli';

// `freshet up` with the real role processes (shards, worker, serving node) from a config file:
// it comes up, `freshet status` finds every actor through the service API, the metrics endpoint
// answers on loopback, each serving node's HTTP URL is printed and answers, and Ctrl-C (SIGINT)
// stops every process it started. Its NATS port here is one this test holds, so `up` must say so
// and take another (the default, 4222, is left alone: a developer's cluster may hold it).
const run = promisify(execFile);
const cli = fileURLToPath(new URL('../packages/cli/dist/main.js', import.meta.url));

describe('freshet up (real roles)', () => {
  it('starts a cluster from a config, reports it, and leaves nothing behind on Ctrl-C', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freshet-up-'));
    const cluster = uniqueName('up');
    const file = join(dir, 'cluster.yaml');
    await writeFile(
      file,
      [
        `cluster: ${cluster}`,
        'dataDir: data',
        'partitions: 4',
        'shards: { count: 2 }',
        'workers: { count: 1, options: { compute: { threads: 1 } } }',
        'serving: { count: 1 }',
        'metrics: { basePort: 0 }',
      ].join('\n'),
    );
    const held = createServer();
    await new Promise<void>((resolve) => held.listen(0, '127.0.0.1', resolve));
    const heldPort = (held.address() as { port: number }).port;
    const up = spawnChild(process.execPath, [
      cli,
      'up',
      '--config',
      file,
      '--quiet',
      '--nats-port',
      String(heldPort),
    ]);
    const out = await waitFor(() => (/is up\./.test(up.output()) ? up.output() : undefined), {
      timeoutMs: 90_000,
      message: () => `cluster up; output:\n${up.output().slice(-4000)}`,
    });
    await new Promise((resolve) => held.close(resolve));
    const nats = /NATS:\s+(\S+)/.exec(out)![1]!;
    expect(out).toContain(`port ${heldPort} is in use`);
    expect(nats).not.toBe(`nats://127.0.0.1:${heldPort}`);
    // Not NATS's default port: the hints carry the URL.
    expect(out).toContain(`freshet status --nats ${nats} --cluster ${cluster}`);
    const servingUrl = /serving:\s+serving-0 (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];
    expect(servingUrl, out).toBeDefined();
    expect((await fetch(`${servingUrl!}/v1/status`)).status).toBe(200);
    const metricsUrl = /metrics:\s+(http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(out)![1]!;
    const pids = [...out.matchAll(/\(pid (\d+)\)/g)].map((m) => Number(m[1]));
    expect(pids).toHaveLength(4);

    const { stdout } = await run(process.execPath, [
      cli,
      'status',
      '--nats',
      nats,
      '--cluster',
      cluster,
      '--json',
    ]);
    const v = JSON.parse(stdout) as ClusterView;
    expect(v.shards.map((s) => [s.id, s.state])).toEqual([
      ['shard-0', 'running'],
      ['shard-1', 'running'],
    ]);
    expect(v.workers).toHaveLength(1);
    expect(v.workers[0]!.state).toBe('running');
    expect(v.workers[0]!.partitions).toEqual([0, 1, 2, 3]);
    expect(v.workers[0]!.backend).toBeTruthy();
    expect(v.serving.map((s) => s.state)).toEqual(['running']);

    const metrics = await (await fetch(metricsUrl)).text();
    expect(metrics).toContain(`freshet_actor_up{cluster="${cluster}",role="shard",id="shard-1"} 1`);
    expect(metrics).toContain(
      `freshet_worker_partitions{cluster="${cluster}",role="worker",id="worker-0"} 4`,
    );

    up.child.kill('SIGINT');
    expect(await up.exited).toBe(0);
    await waitFor(() => pids.every((p) => !isAlive(p)), {
      timeoutMs: 15_000,
      message: () => `every role process gone; alive: ${pids.filter(isAlive).join(',')}`,
    });
  });
});
