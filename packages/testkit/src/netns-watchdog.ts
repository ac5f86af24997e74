import { spawn, type ChildProcess } from 'node:child_process';

/**
 * The netns lab's last line of defence (./netns.ts): the script that removes a lab, and a
 * detached watchdog that runs it when the process that made the lab dies without saying
 * goodbye (kill -9 included: no exit hook runs then). No vitest here, so a plain process can use
 * it (the test that SIGKILLs a lab's owner does).
 */

/** The removal script: idempotent, every step allowed to fail (the thing may be gone already). */
export function netnsRemovalScript(bridge: string, hosts: Array<{ ns: string; veth: string }>): string {
  const lines: string[] = [];
  for (const h of hosts) {
    lines.push(`for p in $(ip netns pids ${h.ns} 2>/dev/null); do kill -9 "$p" 2>/dev/null; done`);
  }
  for (const h of hosts) {
    lines.push(`ip link del ${h.veth} 2>/dev/null`);
    lines.push(`ip netns del ${h.ns} 2>/dev/null`);
    lines.push(`rm -rf /etc/netns/${h.ns}`);
  }
  lines.push(`ip link del ${bridge} 2>/dev/null`);
  lines.push('true');
  return lines.join('\n');
}

/**
 * A detached `sh` that waits on a pipe from this process and runs the removal script when it
 * closes without the goodbye line (this process died, however).
 */
export function startNetnsWatchdog(script: string): ChildProcess {
  const child = spawn(
    'sh',
    ['-c', `trap '' INT HUP TERM; read line; [ "$line" = bye ] && exit 0; ${script}`],
    { detached: true, stdio: ['pipe', 'ignore', 'ignore'] },
  );
  child.unref();
  // the pipe must not keep this process alive, nor an EPIPE crash it
  (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  child.stdin?.on('error', () => undefined);
  return child;
}

/** The goodbye: the watchdog exits without removing anything. */
export function stopNetnsWatchdog(child: ChildProcess): void {
  child.stdin?.end('bye\n');
}
