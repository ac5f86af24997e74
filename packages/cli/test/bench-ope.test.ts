import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { useTempDirs, writeOpenBanditFixture } from '@freshet/testkit';
import { cliMainPath } from '../src/local-cluster.js';

const run = promisify(execFile);
const cli = (...args: string[]) => run(process.execPath, [cliMainPath, ...args], { timeout: 120_000 });
const dir = useTempDirs()('bench-ope');

describe('freshet bench ope', () => {
  it('prints one JSON line: each estimator per policy, the effective sample size, clipped weights', async () => {
    const fx = writeOpenBanditFixture(join(dir, 'obd'), { rows: 1200, items: 6, seed: 3 });
    const { stdout } = await cli(
      'bench',
      'ope',
      '--data',
      `obd:${fx.root}`,
      '--limit',
      '1000',
      '--batch',
      '250',
      '--policy',
      'softmax',
      '--temperature',
      '0.5',
      '--clip',
      '4',
      '--json',
    );
    const lines = stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const r = JSON.parse(lines[0]!) as {
      decisions: number;
      policy: unknown;
      clip: number;
      logging: { value: number };
      estimates: Record<string, Record<string, number>>;
    };
    expect(r).toMatchObject({
      bench: 'ope',
      decisions: 1000,
      candidates: 6,
      policy: { mode: 'softmax', temperature: 0.5 },
    });
    expect(Object.keys(r.estimates)).toEqual(['model', 'frozen', 'random']);
    for (const k of ['model', 'frozen']) {
      const e = r.estimates[k]!;
      // a softmax ranking may show any candidate anywhere: every decision counts, and weights
      // above 4 (a probability over 2/3 against the logging policy's 1/6) are clipped
      expect(e.matched).toBe(1000);
      expect(e.max_weight).toBeLessThanOrEqual(4);
      expect(e.ess).toBeGreaterThan(0);
      expect(e.ess).toBeLessThanOrEqual(1000);
      for (const m of ['ips', 'snips', 'dr', 'dm', 'clipped']) expect(e[m]).toEqual(expect.any(Number));
    }
    expect(r.estimates.random!.ips).toBe(r.logging.value);
  });

  it('refuses a policy it does not know, and a log with no propensities, with a clear message', async () => {
    await expect(cli('bench', 'ope', '--data', 'obd:x', '--policy', 'greedy')).rejects.toMatchObject({
      stderr: expect.stringMatching(/--policy greedy: argmax or softmax/),
    });
    await expect(cli('bench', 'ope', '--data', 'synthetic:requests=100')).rejects.toMatchObject({
      stderr: expect.stringMatching(/no impressions with a logged propensity/),
    });
  });
});
