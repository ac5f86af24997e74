import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { useTempDirs } from '@freshet/testkit';

// The peer runner reads FRESHET_PYTHON when it is loaded: each case sets it, then imports afresh.
const tempDir = useTempDirs();
const small = { rows: 20_000, dim: 8, batch: 1024, seconds: 0.2 };

async function shardBenchWith(python: string) {
  vi.resetModules();
  vi.stubEnv('FRESHET_PYTHON', python);
  const { runShardBench } = await import('../src/shard-bench.js');
  return runShardBench(small);
}

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('PyTorch peers in a bench', () => {
  it('says the peer is unavailable, and why, when there is no Python', async () => {
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const r = await shardBenchWith('/nonexistent/python3');
    const said = stderr.mock.calls.map((c) => String(c[0])).join('');
    stderr.mockRestore();
    expect(r.peer).toMatch(/^unavailable: \/nonexistent\/python3 not found/);
    expect(said).toMatch(/torch_sparse_adam\.py: unavailable/);
    // Freshet's own figures are still there.
    expect(r.row_updates_per_s as number).toBeGreaterThan(0);
    expect(r.vs_torch).toBeUndefined();
  });

  it('runs bench/peers/torch_sparse_adam.py with the bench settings and compares in the same run', async () => {
    // A stand-in interpreter: records its arguments and answers as the peer does.
    const dir = tempDir('peer');
    const args = join(dir, 'args');
    const python = join(dir, 'python3');
    writeFileSync(
      python,
      `#!/bin/sh\necho "$@" > ${args}\necho '{"peer":"stand-in","row_updates_per_s":1000,"step_ms":2}'\n`,
    );
    chmodSync(python, 0o755);
    const r = await shardBenchWith(python);
    expect(r.peer).toBe('stand-in');
    expect(r.torch_row_updates_per_s).toBe(1000);
    expect(r.vs_torch as number).toBeCloseTo((r.row_updates_per_s as number) / 1000, 1);
    const { readFileSync } = await import('node:fs');
    const argv = readFileSync(args, 'utf8').trim().split(' ');
    expect(argv[0]).toMatch(/bench\/peers\/torch_sparse_adam\.py$/);
    expect(argv.slice(1)).toEqual(['8', '1024', '20000', '0.2']);
  });
});
