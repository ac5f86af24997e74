import { execFileSync, spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { waitFor, isAlive } from '@freshet/testkit';
import { startNatsServer } from '../src/local-server.js';

const pgid = (pid: number) =>
  Number(
    execFileSync('ps', ['-o', 'pgid=', '-p', String(pid)])
      .toString()
      .trim(),
  );

describe('startNatsServer', () => {
  it('runs nats-server in its own process group: a terminal Ctrl-C to ours does not reach it', async () => {
    const s = await startNatsServer({ jetstream: false });
    try {
      expect(pgid(s.pid)).toBe(s.pid);
      expect(pgid(s.pid)).not.toBe(pgid(process.pid));
    } finally {
      await s.stop();
    }
    expect(isAlive(s.pid)).toBe(false);
  });

  it('still dies with a parent that exits without stopping it (exit hook)', async () => {
    // A child node process starts a server, prints its pid and exits at once.
    const script = `
      const { startNatsServer } = await import(${JSON.stringify(new URL('../dist/local-server.js', import.meta.url).href)});
      const s = await startNatsServer({ jetstream: false });
      console.log(s.pid);
      process.exit(0);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    await new Promise((r) => child.once('exit', r));
    const pid = Number(out.trim());
    expect(pid).toBeGreaterThan(0);
    await waitFor(() => !isAlive(pid), {
      timeoutMs: 5000,
      message: `nats-server ${pid} killed by the exit hook`,
    });
  });
});
