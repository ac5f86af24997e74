import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { Publisher, publishLive, SyntheticWorld } from '@freshet/client';
import {
  compileClusterConfig,
  startDashboard,
  startLocalCluster,
  type Dashboard,
  type LocalCluster,
} from '@freshet/cli';
import { chromiumPath, uniqueName, waitFor } from '@freshet/testkit';

// The dashboard against a real local cluster (2 shards, 1 worker, 1 serving node) learning from
// a synthetic stream published throughout the test (~400 requests/s, 5 impressions each), opened
// in headless Chromium: progressive AUC and logloss are real values, examples/s and shard
// versions move while we watch.

let lc: LocalCluster;
let browser: Browser;
let dashboard: Dashboard;
let publishing: Promise<void> = Promise.resolve();
const ac = new AbortController();

beforeAll(async () => {
  const executablePath = chromiumPath();
  const cfg = compileClusterConfig({
    cluster: uniqueName('live'),
    dataDir: await mkdtemp(join(tmpdir(), 'freshet-live-')),
    partitions: 2,
    workers: {
      count: 1,
      options: {
        compute: { threads: 1 },
        batch: { size: 128, maxWaitMs: 20 },
        joiner: { windowMs: 300, orphanWaitMs: 300 },
      },
    },
  });
  lc = await startLocalCluster(cfg, { stopGraceMs: 5000, readyTimeoutMs: 90_000 });
  const start = Date.now();
  const world = new SyntheticWorld({
    seed: 5,
    requests: 200_000,
    startTs: start,
    intervalMs: 2.5,
    idPrefix: `l${start}`,
  });
  const pub = new Publisher(lc.nc, { cluster: lc.cluster, partitions: 2 });
  publishing = (async () => {
    await publishLive(pub, world.events(), { signal: ac.signal });
    await pub.close();
  })();
  dashboard = await startDashboard(lc.nc, { cluster: lc.cluster, port: 0, intervalMs: 300 });
  browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
}, 300_000);
afterAll(async () => {
  ac.abort();
  await publishing.catch(() => undefined);
  await browser?.close();
  await dashboard?.close();
  await lc?.stop();
});

describe('dashboard on a learning cluster', () => {
  it('charts real progressive metrics and moving throughput', async () => {
    const page = await browser.newPage();
    await page.goto(dashboard.url);
    const num = async (sel: string, attr = 'data-last') =>
      Number((await page.locator(sel).getAttribute(attr)) ?? NaN);
    // Progressive AUC is undefined (or degenerate) until both classes have been scored: wait for a
    // proper value rather than reading the first one.
    await waitFor(
      async () => {
        const auc = await num('#chart-auc');
        return (await num('#chart-examples')) > 0 && auc > 0 && auc < 1 && (await num('#chart-logloss')) > 0;
      },
      {
        timeoutMs: 45_000,
        intervalMs: 200,
        message: () =>
          `examples/s > 0, AUC in (0,1), logloss > 0; state: ${JSON.stringify(dashboard.state().history.slice(-2))}`,
      },
    );
    const auc = await num('#chart-auc');
    expect(auc).toBeGreaterThan(0);
    expect(auc).toBeLessThan(1);
    expect(await num('#chart-logloss')).toBeGreaterThan(0);
    const ex0 = await num('#chart-examples');
    const version = async () =>
      Number(await page.locator('#shards tbody tr[data-id="shard-0"] td').nth(4).textContent());
    const v0 = await version();
    await waitFor(async () => (await num('#chart-examples')) !== ex0 && (await version()) > v0, {
      timeoutMs: 20_000,
      message: 'examples/s and shard-0 version move',
    });
    expect(await page.locator('#shards tbody tr').count()).toBe(2);
    // Freshness buckets come from the serving node itself (its /metrics), not from samples.
    await waitFor(async () => (await num('#hist-freshness', 'data-total')) > 0, {
      message: 'freshness histogram',
    });
    expect(await page.locator('#src-fresh').textContent()).toBe('(serving nodes)');
    expect(await page.locator('#error').textContent()).toBe('');
  });
});
