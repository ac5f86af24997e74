import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { chromiumPath, uniqueName, waitFor } from '@freshet/testkit';
import { defaultClusterConfig } from '../src/cluster-config.js';
import { dashboardPage } from '../src/dashboard/page.js';
import { startDashboard, type Dashboard } from '../src/dashboard/server.js';
import { startLocalCluster, type LocalCluster } from '../src/local-cluster.js';

// The dashboard (the server `freshet dashboard` runs) against a running local cluster, opened in
// headless Chromium: the charts must show real numbers that move.
const fake = fileURLToPath(new URL('./fixtures/fake-actor.mjs', import.meta.url));

let lc: LocalCluster;
let browser: Browser;
let url: string;
let dashboard: Dashboard;

beforeAll(async () => {
  const executablePath = chromiumPath();
  lc = await startLocalCluster(
    defaultClusterConfig({
      cluster: uniqueName('dash'),
      dataDir: await mkdtemp(join(tmpdir(), 'freshet-dash-')),
    }),
    { nodeArgs: (p) => [fake, p.role, '--options-json', JSON.stringify(p.options)], stopGraceMs: 2000 },
  );
  dashboard = await startDashboard(lc.nc, { cluster: lc.cluster, port: 0, intervalMs: 250 });
  url = dashboard.url;
  browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
}, 300_000);
afterAll(async () => {
  await browser?.close();
  await dashboard?.close();
  await lc?.stop();
});

describe('dashboard in headless Chromium', () => {
  it('shows live, moving charts and the shard table', async () => {
    const page = await browser.newPage();
    await page.goto(url);
    const attr = (sel: string, name: string) => page.locator(sel).getAttribute(name);
    await waitFor(async () => Number(await attr('#chart-examples', 'data-points')) >= 3, {
      message: 'examples/s chart has points',
    });
    const first = Number(await attr('#chart-examples', 'data-last'));
    expect(first).toBeGreaterThan(0);
    await waitFor(async () => Number(await attr('#chart-examples', 'data-last')) !== first, {
      message: 'examples/s moves',
    });
    const auc = Number(await attr('#chart-auc', 'data-last'));
    expect(auc).toBeGreaterThan(0.5);
    expect(auc).toBeLessThan(1);
    expect(Number(await attr('#chart-logloss', 'data-last'))).toBeGreaterThan(0);
    expect(Number(await attr('#chart-freshness', 'data-points'))).toBeGreaterThan(0);
    expect(Number(await attr('#hist-freshness', 'data-total'))).toBeGreaterThan(0);
    expect(Number(await attr('#hist-staleness', 'data-total'))).toBeGreaterThan(0);
    const shardRows = await Promise.all(
      (await page.locator('#shards tbody tr').all()).map((r) => r.getAttribute('data-id')),
    );
    expect(shardRows).toEqual(['shard-0', 'shard-1']);
    const version = async () =>
      Number(await page.locator('#shards tbody tr[data-id="shard-0"] td').nth(4).textContent());
    const v0 = await version();
    await waitFor(async () => (await version()) > v0, { message: 'shard version in the table moves' });
    expect(await page.locator('#others tbody tr').count()).toBe(2);
    // dead letters by reason, per worker (the stand-in worker reports two reasons)
    expect(await page.locator('#others tbody tr[data-id="worker-0"] td').nth(6).textContent()).toBe(
      'RATE_LIMITED 2, FORBIDDEN_KIND 1',
    );
    expect(await page.locator('#error').textContent()).toBe('');
    // The same server answers Prometheus scrapes.
    expect(await (await fetch(`${url}metrics`)).text()).toContain('freshet_worker_progressive_auc');
  });
});

describe('dashboard page', () => {
  it('says when serving is pinned by the model guard, which nodes, and why', async () => {
    const page = await browser.newPage();
    // the page alone (its poll has no server here): render() is what every poll calls
    await page.setContent(dashboardPage({ intervalMs: 3_600_000 }));
    const empty = { counts: [], bounds: [], source: '' };
    const serving = (id: string, pinned: unknown) => ({
      id,
      state: 'running',
      requestsPerSec: 1,
      version: 7,
      freshnessP99Ms: 12,
      pinned,
    });
    const state = (pinned: unknown) => ({
      cluster: 'c',
      history: [],
      freshnessHistogram: empty,
      stalenessHistogram: empty,
      view: { shards: [], workers: [], serving: [serving('serving-0', pinned), serving('serving-1', null)] },
    });
    const render = (st: unknown) =>
      page.evaluate((x) => (globalThis as unknown as { render(s: unknown): void }).render(x), st);
    await render(state({ since: Date.now(), reason: 'logloss 0.91 over 500 examples > baseline 0.52' }));
    expect(await page.locator('#pinned').textContent()).toMatch(
      /^Serving pinned \(serving-0\) since .*: logloss 0\.91 over 500 examples > baseline 0\.52\. freshet model rollback TAG or freshet model unpin ends it\.$/,
    );
    expect(await page.locator('#others tbody tr[data-id="serving-0"] td').nth(3).textContent()).toBe(
      '7 (pinned)',
    );
    expect(await page.locator('#others tbody tr[data-id="serving-1"] td').nth(3).textContent()).toBe('7');
    await render(state(null));
    expect(await page.locator('#pinned').textContent()).toBe('');
    await page.close();
  });
});

describe('freshness buckets from Prometheus text', () => {
  it('re-buckets cumulative le buckets without over-counting, summing label sets (same edges)', async () => {
    const { promHistogram } = await import('../src/dashboard/server.js');
    const text = [
      '# TYPE freshet_serving_freshness_milliseconds histogram',
      'freshet_serving_freshness_milliseconds_bucket{node="a",le="8"} 2',
      'freshet_serving_freshness_milliseconds_bucket{node="a",le="64"} 5',
      'freshet_serving_freshness_milliseconds_bucket{node="a",le="512"} 9',
      'freshet_serving_freshness_milliseconds_bucket{node="a",le="+Inf"} 10',
      'freshet_serving_freshness_milliseconds_bucket{node="b",le="8"} 1',
      'freshet_serving_freshness_milliseconds_bucket{node="b",le="64"} 1',
      'freshet_serving_freshness_milliseconds_bucket{node="b",le="512"} 1',
      'freshet_serving_freshness_milliseconds_bucket{node="b",le="+Inf"} 1',
      'freshet_serving_freshness_milliseconds_sum{node="a"} 900',
    ].join('\n');
    expect(promHistogram(text, 'freshet_serving_freshness_milliseconds', [10, 100, 1000])).toEqual({
      bounds: [10, 100, 1000],
      counts: [3, 3, 4, 1],
    });
    expect(promHistogram('nothing here', 'freshet_serving_freshness_milliseconds', [10])).toBeNull();
  });
});
