import { readFileSync } from 'node:fs';

/**
 * CPU seconds of other processes, read from `/proc/<pid>/stat` (Linux). Benchmarks use it to
 * charge CPU to roles without asking the roles: a process that is busy, stuck or about to exit
 * still shows the CPU it burnt.
 */

/** Clock ticks per second of /proc times. 100 on every Linux ABI Node supports (`getconf CLK_TCK`). */
const CLK_TCK = 100;

/** user + system CPU seconds of a live process, or undefined when it is gone or /proc is missing. */
export function procCpuSeconds(pid: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return (utime + stime) / CLK_TCK;
}

/**
 * Accumulates CPU seconds per group (a role) over a set of pids that may change (a restarted
 * process gets a new pid): every sample keeps the last reading per pid, so a process that exits
 * between samples loses at most one sampling interval of CPU.
 */
export class CpuMeter {
  private readonly last = new Map<number, { group: string; cpu: number }>();
  private readonly base = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;

  /** `pids()` lists the current pid of every process, by group, at each sample. */
  constructor(private readonly pids: () => Array<{ group: string; pid: number }>) {}

  /** Reads every process now. */
  sample(): void {
    for (const { group, pid } of this.pids()) {
      if (pid <= 0) continue;
      const cpu = pid === process.pid ? selfCpuSeconds() : procCpuSeconds(pid);
      if (cpu === undefined) continue;
      this.last.set(pid, { group, cpu });
    }
  }

  /** Samples every `everyMs` until stop(). */
  start(everyMs = 250): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Starts the measured window: CPU before now is not counted by {@link seconds}. */
  mark(): void {
    this.sample();
    this.base.clear();
    for (const [pid, v] of this.last) this.base.set(pid, v.cpu);
  }

  /** CPU seconds per group since {@link mark} (since the first sample when never marked). */
  seconds(): Record<string, number> {
    this.sample();
    const out: Record<string, number> = {};
    for (const [pid, v] of this.last) {
      out[v.group] = (out[v.group] ?? 0) + v.cpu - (this.base.get(pid) ?? 0);
    }
    for (const k of Object.keys(out)) out[k] = Math.round(out[k]! * 100) / 100;
    return out;
  }
}

/** This process's own user + system CPU seconds (no /proc needed). */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}
