import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { chromiumPath, spawnChild, uniqueName } from '@freshet/testkit';
import { defaultClusterConfig } from '../src/cluster-config.js';
import { cliMainPath, startLocalCluster, type LocalCluster } from '../src/local-cluster.js';

// `freshet replay --report FILE` as a real CLI process against a running local cluster (stand-in
// actors whose numbers move): the file is self-contained, its embedded samples are real numbers,
// and headless Chromium draws them with the dashboard's chart code.
const fake = fileURLToPath(new URL('./fixtures/fake-actor.mjs', import.meta.url));
let lc: LocalCluster;
let browser: Browser;
let dir: string;

beforeAll(async () => {
  const executablePath = chromiumPath();
  dir = await mkdtemp(join(tmpdir(), 'freshet-report-'));
  lc = await startLocalCluster(defaultClusterConfig({ cluster: uniqueName('rep'), dataDir: dir }), {
    nodeArgs: (p) => [fake, p.role, '--options-json', JSON.stringify(p.options)],
    stopGraceMs: 2000,
  });
  browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
}, 300_000);
afterAll(async () => {
  await browser?.close();
  await lc?.stop();
});

describe('replay --report', () => {
  it('writes a self-contained HTML report whose charts show the sampled numbers', async () => {
    const file = join(dir, 'replay.html');
    const child = spawnChild(process.execPath, [
      cliMainPath,
      'replay',
      '--data',
      'synthetic',
      '--limit',
      '1500',
      '--rate',
      '1000',
      '--nats',
      lc.natsUrls.join(','),
      '--cluster',
      lc.cluster,
      '--json',
      '--report',
      file,
      '--report-interval-ms',
      '200',
    ]);
    const code = await child.exited;
    expect(code, child.output()).toBe(0);
    const html = await readFile(file, 'utf8');
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=/); // nothing fetched from elsewhere
    const data = JSON.parse(
      /<script id="report-data" type="application\/json">(.*?)<\/script>/s.exec(html)![1]!,
    ) as {
      history: Array<{ examplesPerSec: number; auc: number | null }>;
      view: { shards: unknown[] };
    };
    expect(data.history.length).toBeGreaterThanOrEqual(3);
    for (const p of data.history) {
      expect(Number.isFinite(p.examplesPerSec)).toBe(true);
      expect(p.examplesPerSec).toBeGreaterThanOrEqual(0);
    }
    // a sample can fall between two batches on a busy machine; most see the cluster learning
    const moving = data.history.filter((p) => p.examplesPerSec > 0).length;
    expect(moving).toBeGreaterThanOrEqual(Math.ceil(data.history.length / 2));
    expect(data.view.shards).toHaveLength(2);

    const page = await browser.newPage();
    await page.goto(pathToFileURL(file).href);
    await page.waitForSelector('body[data-rendered="1"]', { timeout: 10_000 });
    const attr = (sel: string, name: string) => page.locator(sel).getAttribute(name);
    expect(Number(await attr('#chart-examples', 'data-points'))).toBe(data.history.length);
    expect(Number(await attr('#chart-examples', 'data-last'))).toBeGreaterThan(0);
    const auc = Number(await attr('#chart-auc', 'data-last'));
    expect(auc).toBeGreaterThan(0.5);
    expect(auc).toBeLessThan(1);
    expect(Number(await attr('#hist-staleness', 'data-total'))).toBeGreaterThan(0);
    expect(await page.locator('#shards tbody tr').count()).toBe(2);
    expect(await page.locator('#summary-table tr[data-key="events"] td').nth(1).textContent()).toBe('1500');
  }, 60_000);
});
