import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { spawnChild, uniqueName, waitFor, isAlive } from '@freshet/testkit';
import type { ClusterView } from '@freshet/cli';

// `freshet up` with the real role processes (shards, worker, serving node) from a config file:
// it comes up, `freshet status` finds every actor through the service API, the metrics endpoint
// answers on loopback, and Ctrl-C (SIGINT) stops every process it started.
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
    const up = spawnChild(process.execPath, [cli, 'up', '--config', file, '--quiet']);
    const out = await waitFor(() => (/is up\./.test(up.output()) ? up.output() : undefined), {
      timeoutMs: 90_000,
      message: () => `cluster up; output:\n${up.output().slice(-4000)}`,
    });
    const nats = /NATS:\s+(\S+)/.exec(out)![1]!;
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
