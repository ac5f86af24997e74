import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { afterAll } from 'vitest';

export interface ChildHandle {
  child: ChildProcess;
  /** stdout+stderr so far, for assertions and failure messages. */
  output(): string;
  /** Resolves with the exit code (or signal) once the process has exited. */
  exited: Promise<number | NodeJS.Signals>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once exited. */
  stop(graceMs?: number): Promise<number | NodeJS.Signals>;
}

const children = new Set<ChildHandle>();

// Registered when the module is imported, that is while vitest collects the test file: a hook
// registered later, from inside a running test, is not run for that file.
afterAll(async () => {
  await Promise.all([...children].map((c) => c.stop(2000)));
});
process.once('exit', () => {
  for (const c of children) c.child.kill('SIGKILL');
});

/**
 * Spawns a real child process (a shard, worker or serving node) that is killed after the test
 * file whatever happens, so no test leaves an orphan behind.
 */
export function spawnChild(cmd: string, args: string[], opts: SpawnOptions = {}): ChildHandle {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  let out = '';
  const keep = (b: Buffer) => {
    out += b.toString();
    if (out.length > 1_000_000) out = out.slice(-500_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | NodeJS.Signals>((resolve) => {
    child.once('exit', (code, sig) => resolve(code ?? sig ?? -1));
  });
  const handle: ChildHandle = {
    child,
    output: () => out,
    exited,
    async stop(graceMs = 5000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(t);
      }
      children.delete(handle);
      return exited;
    },
  };
  children.add(handle);
  void exited.then(() => children.delete(handle));
  return handle;
}

/** Whether a process exists (signal 0 probes without sending anything). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
