import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SyntheticWorld } from '@freshet/client';
import { runFtrlBench } from '../src/ftrl-bench.js';

/**
 * The bar for generic logs: a CSV read through a spec file (the format the client
 * README documents), the lr model with FTRL at the default batch, within 0.002 AUC of
 * per-example FTRL-Proximal on the same file.
 */
const dir = mkdtempSync(join(tmpdir(), 'freshet-ftrl-bench-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeLog(): { csv: string; spec: string } {
  const world = new SyntheticWorld({ seed: 11, users: 80, items: 60, requests: 1600, slate: 5 });
  const lines = ['ts,user,item,category,position,clicked'];
  for (const e of world.labelled()) {
    const f = e.features as Record<string, string | number>;
    lines.push([e.ts, f.user, f.item, f.category, f.position, e.label].join(','));
  }
  const csv = join(dir, 'log.csv');
  writeFileSync(csv, lines.join('\n') + '\n');
  const spec = join(dir, 'spec.json');
  writeFileSync(
    spec,
    JSON.stringify({
      kind: 'example',
      label: { column: 'clicked' },
      user: 'user',
      item: 'item',
      timestamp: { column: 'ts', unit: 'ms' },
      categorical: ['user', 'item', 'category'],
      numeric: ['position'],
    }),
  );
  return { csv, spec };
}

describe('bench ftrl on a CSV log', () => {
  it('lr + FTRL at the default batch is within 0.002 AUC of sequential FTRL; the summed batch is not', async () => {
    const { csv, spec } = writeLog();
    const r = (await runFtrlBench({ data: `csv:${csv}`, spec, threads: 1 })) as {
      examples: number;
      sequential: { auc: number };
      freshet: { batch: number; mode: string; auc: number; gap: number }[];
    };
    expect(r.examples).toBe(8000);
    expect(r.sequential.auc).toBeGreaterThan(0.55); // there is something to learn, and it is learned
    const seq = r.freshet.find((x) => x.mode === 'sequential');
    const summed = r.freshet.find((x) => x.mode === 'summed');
    expect(seq?.batch).toBe(256);
    expect(Math.abs(seq!.gap)).toBeLessThanOrEqual(0.002);
    // control: the same setting applied as one summed gradient per batch falls behind
    expect(summed!.gap).toBeGreaterThan(0.005);
  }, 120_000);
});
