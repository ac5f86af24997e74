import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { spawnChild, waitFor } from '@freshet/testkit';

const cli = fileURLToPath(new URL('../packages/cli/dist/main.js', import.meta.url));

/** Every live process whose command line contains `needle` (the demo's role processes, nats). */
function processesWith(needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(needle)) out.push(Number(d));
    } catch {
      // exited while we looked
    }
  }
  return out;
}

// `freshet demo` started for real (nats-server, 2 shards, a worker, a serving node), then Ctrl-C
// (SIGINT) once learning shows: it stops without an error and leaves no process behind.
describe('freshet demo', () => {
  it('stops cleanly on Ctrl-C with no orphan process', async () => {
    const demo = spawnChild(process.execPath, [cli, 'demo', '--duration', '120'], {
      env: { ...process.env, CI: '1' },
    });
    await waitFor(() => /cluster up/.test(demo.output()), {
      timeoutMs: 60_000,
      message: () => `the demo cluster to start:\n${demo.output().slice(-2000)}`,
    });
    const roles = processesWith('"cluster":"demo"');
    expect(roles.length).toBeGreaterThanOrEqual(4);
    demo.child.kill('SIGINT');
    const code = await Promise.race([
      demo.exited,
      new Promise<string>((r) => setTimeout(() => r('still running'), 30_000)),
    ]);
    expect(code, demo.output().slice(-2000)).toBe(0);
    expect(demo.output()).toMatch(/stopped after \d+ events/);
    expect(demo.output()).not.toMatch(/freshet: \[/);
    await waitFor(() => roles.every((pid) => !processesWith('"cluster":"demo"').includes(pid)), {
      timeoutMs: 15_000,
      message: 'every role process of the demo to exit',
    });
  }, 120_000);
});
