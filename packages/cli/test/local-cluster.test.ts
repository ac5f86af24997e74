import { describe, expect, it } from 'vitest';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnChild, uniqueName, waitFor, isAlive } from '@freshet/testkit';
import { defaultClusterConfig } from '../src/cluster-config.js';
import { startLocalCluster, type LocalCluster } from '../src/local-cluster.js';

const fake = fileURLToPath(new URL('./fixtures/fake-actor.mjs', import.meta.url));
const parentScript = fileURLToPath(new URL('./fixtures/cluster-parent.mjs', import.meta.url));
const nodeArgs = (p: { role: string; options: unknown }) => [
  fake,
  p.role,
  '--options-json',
  JSON.stringify(p.options),
];

describe('local cluster', () => {
  it('starts NATS and every actor, restarts a killed one, leaves a drained one down, and stop() leaves no process behind', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freshet-lc-'));
    const cfg = defaultClusterConfig({ cluster: uniqueName('lc'), dataDir: dir });
    let lc: LocalCluster | undefined;
    try {
      lc = await startLocalCluster(cfg, { nodeArgs, stopGraceMs: 2000, readyTimeoutMs: 20_000 });
      const actors = await lc.actors();
      expect(actors.map((a) => `${a.role}:${a.id}`)).toEqual([
        'shard:shard-0',
        'shard:shard-1',
        'worker:worker-0',
        'serving:serving-0',
      ]);
      const shard0 = lc.processes.find((p) => p.id === 'shard-0')!;
      const oldPid = shard0.pid;
      shard0.kill('SIGKILL');
      await waitFor(() => shard0.restarts === 1 && shard0.running && shard0.pid !== oldPid, {
        message: 'shard-0 restarted',
      });
      await waitFor(async () => (await lc!.actors()).filter((a) => a.id === 'shard-0').length === 1, {
        message: 'shard-0 back in the service API',
      });
      // A restarted serving node listens where it did: clients keep its URL.
      const httpOf = async () =>
        (await lc!.actors()).find((a) => a.id === 'serving-0')?.status.http as string | undefined;
      const url = await httpOf();
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const serving = lc.processes.find((p) => p.id === 'serving-0')!;
      const servingPid = serving.pid;
      serving.kill('SIGKILL');
      await waitFor(() => serving.restarts === 1 && serving.running && serving.pid !== servingPid, {
        message: 'serving-0 restarted',
      });
      await waitFor(async () => (await httpOf()) !== undefined, { message: 'serving-0 back' });
      expect(await httpOf()).toBe(url);
      // A clean exit (what `freshet drain` ends in) is not a crash: the actor stays down.
      const worker = lc.processes.find((p) => p.id === 'worker-0')!;
      worker.kill('SIGTERM');
      await waitFor(() => !worker.running, { message: 'worker-0 to exit' });
      await waitFor(async () => !(await lc!.actors()).some((a) => a.id === 'worker-0'), {
        message: 'worker-0 gone from the service API',
      });
      expect(worker.restarts).toBe(0);
      expect(worker.running).toBe(false);
    } finally {
      const pids = [...(lc?.processes.map((p) => p.pid) ?? []), ...(lc?.natsServers.map((s) => s.pid) ?? [])];
      await lc?.stop();
      for (const pid of pids) expect(isAlive(pid), `pid ${pid} still alive`).toBe(false);
    }
  });

  it('fails fast with the actor output when a role process dies during start, and cleans up', async () => {
    const cfg = defaultClusterConfig({
      cluster: uniqueName('lc'),
      dataDir: await mkdtemp(join(tmpdir(), 'freshet-lc-')),
    });
    await expect(
      startLocalCluster(cfg, {
        nodeArgs: (p) => ['-e', `console.error('boom in ${p.id}'); process.exit(3)`],
        stopGraceMs: 1000,
      }),
    ).rejects.toThrow(/shard-\d exited \(3\) during start:[\s\S]*boom in shard/);
  });

  it('leaves no orphan when its parent is killed with SIGKILL', async () => {
    const child = spawnChild(process.execPath, [
      parentScript,
      uniqueName('lc'),
      await mkdtemp(join(tmpdir(), 'freshet-lc-')),
    ]);
    const line = await waitFor(() => /\{"pids".*\}/.exec(child.output())?.[0], {
      timeoutMs: 30_000,
      message: () => `cluster parent ready; output:\n${child.output()}`,
    });
    const { pids } = JSON.parse(line) as { pids: number[] };
    expect(pids).toHaveLength(5);
    for (const pid of pids) expect(isAlive(pid)).toBe(true);
    child.child.kill('SIGKILL');
    await waitFor(() => pids.every((p) => !isAlive(p)), {
      timeoutMs: 15_000,
      message: () => `all of ${pids.join(',')} gone; alive: ${pids.filter(isAlive).join(',')}`,
    });
  });
});
