/**
 * The orphan reaper: a tiny process the local cluster starts first, in its own process group.
 * Its stdin is a pipe from the parent; lines `+<pid>` / `-<pid>` add and remove processes to
 * watch, `exit` ends it quietly. When the pipe closes without `exit`, the parent died (kill -9,
 * crash): the reaper SIGTERMs every watched process, SIGKILLs the survivors after a grace period
 * and exits. Exit hooks cannot do this: a SIGKILLed parent runs none.
 */
import { createInterface } from 'node:readline';

const graceMs = Number(process.argv[2] ?? 5000);
const pids = new Set<number>();
let quiet = false;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    // Role processes lead their own process group (spawned detached): signal the group.
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  }
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const l = line.trim();
  if (l === 'exit') {
    quiet = true;
    process.exit(0);
  }
  const n = Number(l.slice(1));
  if (!Number.isInteger(n) || n <= 0) return;
  if (l.startsWith('+')) pids.add(n);
  else if (l.startsWith('-')) pids.delete(n);
});
rl.on('close', () => {
  if (quiet) return;
  for (const p of pids) signal(p, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  const tick = setInterval(() => {
    const left = [...pids].filter(alive);
    if (left.length === 0 || Date.now() > deadline) {
      for (const p of left) signal(p, 'SIGKILL');
      clearInterval(tick);
      process.exit(0);
    }
  }, 100);
});
// The reaper must outlive a Ctrl-C aimed at its parent's terminal group.
process.on('SIGINT', () => undefined);
process.on('SIGHUP', () => undefined);
