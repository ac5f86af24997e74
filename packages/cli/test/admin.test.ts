import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { uniqueName, waitFor } from '@freshet/testkit';
import { defaultClusterConfig } from '../src/cluster-config.js';
import { startLocalCluster, type LocalCluster } from '../src/local-cluster.js';
import { sendAdmin, targets } from '../src/commands/admin.js';

const fake = fileURLToPath(new URL('./fixtures/fake-actor.mjs', import.meta.url));
let lc: LocalCluster;

beforeAll(async () => {
  lc = await startLocalCluster(
    defaultClusterConfig({
      cluster: uniqueName('adm'),
      dataDir: await mkdtemp(join(tmpdir(), 'freshet-adm-')),
    }),
    {
      nodeArgs: (p) => [fake, p.role, '--options-json', JSON.stringify(p.options)],
      stopGraceMs: 2000,
      restartOnExit: false,
    },
  );
});
afterAll(async () => {
  await lc?.stop();
});

describe('admin commands', () => {
  it('checkpoint goes to every shard and reports each reply', async () => {
    const shards = await targets(lc.nc, lc.cluster, ['shard']);
    expect(shards.map((a) => a.id)).toEqual(['shard-0', 'shard-1']);
    const r1 = await sendAdmin(lc.nc, lc.cluster, shards, 'checkpoint');
    const r2 = await sendAdmin(lc.nc, lc.cluster, shards, 'checkpoint');
    expect(r1.map((r) => [r.id, r.ok, r.detail])).toEqual([
      ['shard-0', true, { checkpoints: 1 }],
      ['shard-1', true, { checkpoints: 1 }],
    ]);
    expect(r2.every((r) => r.detail?.checkpoints === 2)).toBe(true);
  });

  it('restore passes the checkpoint id to the one actor named', async () => {
    const one = await targets(lc.nc, lc.cluster, ['shard'], 'shard-1');
    const [r] = await sendAdmin(lc.nc, lc.cluster, one, 'restore', { checkpoint: 'ckpt-7' });
    expect(r).toMatchObject({ id: 'shard-1', ok: true, detail: { body: { checkpoint: 'ckpt-7' } } });
  });

  it('names the live actors when the asked-for one does not exist', async () => {
    await expect(targets(lc.nc, lc.cluster, ['shard'], 'shard-9')).rejects.toThrow(
      /no actor "shard-9".*live: shard-0, shard-1, worker-0, serving-0/,
    );
  });

  it('says so when an actor does not answer admin commands', async () => {
    const serving = await targets(lc.nc, lc.cluster, ['serving'], 'serving-0');
    const [r] = await sendAdmin(lc.nc, lc.cluster, serving, 'drain', {}, 2000);
    expect(r).toMatchObject({ ok: false, error: { code: 'UNAVAILABLE' } });
    expect(r!.error!.message).toMatch(/does not answer drain commands/);
  });

  it('drain stops the named worker and it leaves the service API', async () => {
    const w = await targets(lc.nc, lc.cluster, ['worker'], 'worker-0');
    const [r] = await sendAdmin(lc.nc, lc.cluster, w, 'drain', { timeoutMs: 1000 });
    expect(r!.ok).toBe(true);
    const proc = lc.processes.find((p) => p.id === 'worker-0')!;
    await waitFor(() => !proc.running, { message: 'worker-0 exited after drain' });
    await waitFor(async () => !(await lc.actors()).some((a) => a.id === 'worker-0'));
  });
});
