import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { uniqueName, waitFor } from '@freshet/testkit';
import { defaultClusterConfig } from '../src/cluster-config.js';
import { cliMainPath, startLocalCluster, type LocalCluster } from '../src/local-cluster.js';
import { createActorMetrics, createClusterMetrics, serveActorMetrics, serveMetrics } from '../src/metrics.js';
import type { ClusterView } from '../src/actor-view.js';

const run = promisify(execFile);
const fake = fileURLToPath(new URL('./fixtures/fake-actor.mjs', import.meta.url));
let lc: LocalCluster;

beforeAll(async () => {
  const cfg = defaultClusterConfig({
    cluster: uniqueName('st'),
    dataDir: await mkdtemp(join(tmpdir(), 'freshet-st-')),
    shards: { count: 3 },
    workers: { count: 2 },
  });
  lc = await startLocalCluster(cfg, {
    nodeArgs: (p) => [fake, p.role, '--options-json', JSON.stringify(p.options)],
    stopGraceMs: 2000,
  });
});
afterAll(async () => {
  await lc?.stop();
});

const status = async (...args: string[]) =>
  run(process.execPath, [cliMainPath, 'status', '--nats', lc.natsUrls[0]!, ...args], { timeout: 20_000 });

describe('freshet status', () => {
  it('--json lists every live actor of the cluster with its numbers', async () => {
    const { stdout } = await status('--cluster', lc.cluster, '--json');
    const v = JSON.parse(stdout) as ClusterView;
    expect(v.shards.map((s) => s.id)).toEqual(['shard-0', 'shard-1', 'shard-2']);
    expect(v.workers.map((w) => w.id)).toEqual(['worker-0', 'worker-1']);
    expect(v.serving.map((s) => s.id)).toEqual(['serving-0']);
    expect(v.shards[1]).toMatchObject({
      shard: 1,
      state: 'running',
      stalenessP50: 1,
      stalenessP99: 4,
      rejects: 2,
    });
    expect(v.shards[0]!.rows).toBeGreaterThan(0);
    expect(v.workers[0]!.partitions).toEqual([0, 1, 2, 3]);
    expect(v.workers[0]!.auc).toBeGreaterThan(0.5);
    expect(v.serving[0]!.freshnessP99Ms).toBe(400);
    // a node holding the whole model (a sliced one reports `slice: {index, count}`)
    expect(v.serving[0]!.slice).toBeNull();
    // dead letters by reason, per worker (non-zero reasons) and summed over the cluster
    expect(v.workers[0]!.deadLetters).toEqual({ RATE_LIMITED: 2, FORBIDDEN_KIND: 1 });
    expect(v.deadLetters).toEqual({ RATE_LIMITED: 4, FORBIDDEN_KIND: 2 });
  });

  it('prints tables for people, and only the asked-for cluster', async () => {
    const { stdout } = await status('--cluster', lc.cluster);
    expect(stdout).toMatch(/3 shard\(s\), 2 worker\(s\), 1 serving node\(s\)/);
    expect(stdout).toMatch(/SHARDS\nID\s+STATE\s+ROWS\s+MEMORY\s+VERSION/);
    expect(stdout).toMatch(/worker-1\s+running\s+0,1,2,3/);
    expect(stdout).toMatch(/LAG\s+DEAD\n/);
    expect(stdout).toContain('dead letters since the workers started: RATE_LIMITED 4, FORBIDDEN_KIND 2');
    const other = await status('--cluster', 'some-other-cluster', '--json');
    expect(JSON.parse(other.stdout)).toMatchObject({ shards: [], workers: [], serving: [] });
  });

  it('says what is wrong and what to do when NATS is not there', async () => {
    await expect(
      run(process.execPath, [cliMainPath, 'status', '--nats', 'nats://127.0.0.1:1'], { timeout: 20_000 }),
    ).rejects.toMatchObject({
      stderr: expect.stringMatching(/cannot connect to NATS at nats:\/\/127\.0\.0\.1:1.*freshet up/),
    });
  });
});

describe('metrics', () => {
  it('exports every actor with freshet_<role>_<what>{cluster,role,id}, on loopback, with moving numbers', async () => {
    const cm = createClusterMetrics(lc.nc, { cluster: lc.cluster });
    const srv = await serveMetrics(cm.registry);
    try {
      expect(srv.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const scrape = async () => (await fetch(srv.url)).text();
      const text = await scrape();
      const labels = `cluster="${lc.cluster}",role="shard",id="shard-2"`;
      expect(text).toContain(`freshet_actor_up{${labels}} 1`);
      expect(text).toContain(`freshet_shard_rejects_total{${labels}} 2`);
      expect(text).toContain(`freshet_shard_staleness{${labels},quantile="0.99"} 4`);
      // The stand-in worker's AUC climbs from 0.5 to 0.7 with its uptime.
      const auc = Number(
        new RegExp(
          `freshet_worker_progressive_auc\\{cluster="${lc.cluster}",role="worker",id="worker-0"\\} (\\S+)`,
        ).exec(text)?.[1],
      );
      expect(auc).toBeGreaterThanOrEqual(0.5);
      expect(auc).toBeLessThanOrEqual(0.7);
      expect(text).toContain('freshet_serving_freshness_seconds{');
      const version = (t: string) =>
        Number(new RegExp(`freshet_shard_version\\{${labels}\\} (\\d+)`).exec(t)?.[1] ?? NaN);
      const v0 = version(text);
      await waitFor(async () => version(await scrape()) > v0, {
        message: 'shard version moves between scrapes',
      });
      expect((await fetch(srv.url.replace('/metrics', '/other'))).status).toBe(404);
    } finally {
      await srv.close();
    }
  });

  it('per-process metrics read the actor status on every scrape', async () => {
    let examples = 10;
    const reg = createActorMetrics({
      cluster: 'c1',
      role: 'worker',
      id: 'w-1',
      status: () => ({
        examples: (examples += 5),
        progressive: { auc: 0.7, logloss: 0.5 },
        examplesPerS: 3,
        acksConfirming: 4,
        counters: { ackRetries: 9, appliedRedeliveries: 2 },
        deadLetters: { RATE_LIMITED: 3, OVERSIZE: 0 },
        hostRouting: {
          hostMessages: 6,
          hostParts: 20,
          direct: 3,
          notHere: 1,
          hostFailures: 1,
          lingerMs: 120,
        },
      }),
    });
    const a = await reg.metrics();
    expect(a).toContain('freshet_worker_acks_confirming{cluster="c1",role="worker",id="w-1"} 4');
    expect(a).toContain('freshet_worker_ack_retries_total{cluster="c1",role="worker",id="w-1"} 9');
    expect(a).toContain('freshet_worker_applied_redeliveries_total{cluster="c1",role="worker",id="w-1"} 2');
    expect(a).toContain('freshet_worker_examples_total{cluster="c1",role="worker",id="w-1"} 15');
    expect(a).toContain(
      'freshet_worker_dead_letters_total{cluster="c1",role="worker",id="w-1",reason="RATE_LIMITED"} 3',
    );
    expect(a).not.toContain('reason="OVERSIZE"');
    expect(a).toContain('freshet_worker_host_messages_total{cluster="c1",role="worker",id="w-1"} 6');
    expect(a).toContain(
      'freshet_worker_shard_requests_total{cluster="c1",role="worker",id="w-1",path="host"} 20',
    );
    expect(a).toContain(
      'freshet_worker_shard_requests_total{cluster="c1",role="worker",id="w-1",path="direct"} 3',
    );
    expect(a).toContain('freshet_worker_host_failures_total{cluster="c1",role="worker",id="w-1"} 1');
    expect(a).toContain('freshet_worker_host_linger_seconds{cluster="c1",role="worker",id="w-1"} 0.12');
    expect(a).toContain('freshet_worker_progressive_auc{cluster="c1",role="worker",id="w-1"} 0.7');
    expect(a).toContain('freshet_worker_process_cpu_seconds_total');
    expect(await reg.metrics()).toContain(
      'freshet_worker_examples_total{cluster="c1",role="worker",id="w-1"} 20',
    );
    const srv = await serveActorMetrics({
      cluster: 'c1',
      role: 'shard',
      id: 'shard-3',
      status: () => ({ rows: 42 }),
    });
    try {
      expect(srv.url).toMatch(/^http:\/\/127\.0\.0\.1:/);
      expect(await (await fetch(srv.url)).text()).toContain(
        'freshet_shard_rows{cluster="c1",role="shard",id="shard-3"} 42',
      );
    } finally {
      await srv.close();
    }
  });
});
