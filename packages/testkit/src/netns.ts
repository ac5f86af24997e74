import { spawnSync, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll } from 'vitest';
import { FreshetError } from '@freshet/protocol';
import { spawnChild, type ChildHandle } from './processes.js';
import { netnsRemovalScript, startNetnsWatchdog, stopNetnsWatchdog } from './netns-watchdog.js';

/**
 * Hosts on one machine: each a Linux network namespace with its own address on a bridge (a veth
 * pair per host, bandwidth limited with `tc tbf` where the kernel has it), for tests that need
 * roles on different hosts (own interfaces, own loopback, own ports, a link that can go down).
 *
 * Needs root (CAP_NET_ADMIN) and iproute2. Nothing here skips: a machine that cannot make
 * namespaces fails with an `UNAVAILABLE` FreshetError that says why.
 *
 * Cleanup cannot depend on the test process living: every name carries a random lab id, and a
 * detached watchdog (`sh`, reading a pipe from the test process) runs the same removal script
 * when the pipe closes without a goodbye, that is when the test process died (kill -9 included).
 * `destroy()` runs it too, and checks that nothing of the lab is left.
 */

export interface NetnsLabOptions {
  /** Host names (letters, digits, dashes; at most 20). */
  hosts: string[];
  /** Bandwidth of each host's link (both ways), Mbit/s; 0 for none. Default 1000. */
  rateMbit?: number;
  /**
   * Extra names every host resolves (`/etc/hosts` inside the namespaces: `ip netns exec` binds
   * `/etc/netns/<ns>/hosts` over it), name → host.
   */
  names?: Record<string, string>;
}

export interface NetnsHost {
  readonly name: string;
  /** The namespace (`ip netns exec <ns> ...`). */
  readonly ns: string;
  readonly ip: string;
  /** Whether its link is up (see {@link down}). */
  readonly linkUp: boolean;
  /**
   * Runs a process inside the host: `ip netns exec <ns> cmd args` (which execs, so the child's
   * pid is the command's). Killed after the test file like any `spawnChild`.
   */
  spawn(cmd: string, args: string[], opts?: SpawnOptions): ChildHandle;
  /** Every pid inside the namespace, whoever started it. */
  pids(): number[];
  /** Host loss: its link goes down first (no FIN leaves), then SIGKILL to every process in it. */
  down(): Promise<void>;
  /** The link alone goes down (a partition; the processes live on). */
  linkDown(): void;
  /** SIGKILL to every process in the namespace, until none is left. */
  killAll(): Promise<void>;
  /** The link comes back (processes are the caller's to start again). */
  up(): void;
}

export interface NetnsLab {
  readonly id: string;
  readonly bridge: string;
  /** The bridge's own address: the test process (root namespace) reaches every host from it. */
  readonly gatewayIp: string;
  readonly hosts: readonly NetnsHost[];
  host(name: string): NetnsHost;
  /**
   * Several hosts lost at once (a machine holding several pods): every link down first, then
   * every process killed.
   */
  down(names: string[]): Promise<void>;
  /** Whether each link got its `tc tbf` limit (false where the kernel lacks sch_tbf). */
  readonly rateLimited: boolean;
  /** Removes everything (processes, veths, namespaces, hosts files, bridge) and checks it is gone. */
  destroy(): Promise<void>;
}

const HOST_NAME = /^[a-z0-9][a-z0-9-]{0,19}$/;

function sh(cmd: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return {
    ok: r.status === 0,
    out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}`.trim(),
  };
}

function must(cmd: string, args: string[]): string {
  const r = sh(cmd, args);
  if (!r.ok) throw new FreshetError('INTERNAL', `${cmd} ${args.join(' ')} failed: ${r.out}`);
  return r.out;
}

/**
 * Fails with a clear `UNAVAILABLE` error unless this process can make namespaces, veths
 * and bridges (root, iproute2, a kernel with them): tests call it first and fail, never skip.
 */
export function assertNetnsAvailable(): void {
  const ip = sh('ip', ['-V']);
  if (!ip.ok) {
    throw new FreshetError(
      'UNAVAILABLE',
      `network namespaces unavailable: iproute2's \`ip\` is not runnable (${ip.out}); install it (Debian: apt-get install iproute2; npm test does that as root)`,
    );
  }
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new FreshetError(
      'UNAVAILABLE',
      `network namespaces unavailable: network namespaces need root (CAP_NET_ADMIN); this test runs as uid ${process.getuid()}. Run it as root (CI does).`,
    );
  }
  const probe = `fxprobe${randomBytes(3).toString('hex')}`;
  const r = sh('ip', ['netns', 'add', probe]);
  sh('ip', ['netns', 'del', probe]);
  if (!r.ok) {
    throw new FreshetError(
      'UNAVAILABLE',
      `network namespaces unavailable: cannot create a network namespace (\`ip netns add\`: ${r.out}); a container needs CAP_SYS_ADMIN and CAP_NET_ADMIN`,
    );
  }
}

/** A /24 in 10.0.0.0/8 that no interface of this machine is on. */
function freeSubnet(): string {
  const used = sh('ip', ['-o', '-4', 'addr', 'show']).out + sh('ip', ['-4', 'route', 'show']).out;
  for (let i = 0; i < 50; i++) {
    const net = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 250)}`;
    if (!used.includes(` ${net}.`)) return net;
  }
  throw new FreshetError(
    'UNAVAILABLE',
    'network namespaces unavailable: no free 10.x.y.0/24 subnet for the bridge',
  );
}

/**
 * Creates the bridge and one namespace per host (synchronously: iproute2 commands); on any
 * failure part way, removes what it made and throws. Call `destroy()` when done (or use {@link useNetnsLab}).
 */
export function createNetnsLab(opts: NetnsLabOptions): NetnsLab {
  assertNetnsAvailable();
  if (opts.hosts.length === 0 || opts.hosts.length > 200) {
    throw new FreshetError('CONFIG', `a lab needs 1 to 200 hosts, not ${opts.hosts.length}`);
  }
  for (const h of opts.hosts) {
    if (!HOST_NAME.test(h)) throw new FreshetError('CONFIG', `host name "${h}" is not [a-z0-9-]{1,20}`);
  }
  if (new Set(opts.hosts).size !== opts.hosts.length) {
    throw new FreshetError('CONFIG', `host names repeat: ${opts.hosts.join(', ')}`);
  }
  // interface names are at most 15 bytes: fx + 6 hex + v/p + index
  const id = randomBytes(3).toString('hex');
  const bridge = `fx${id}b`;
  const net = freeSubnet();
  const gatewayIp = `${net}.1`;
  const plan = opts.hosts.map((name, i) => ({
    name,
    ns: `freshet-${id}-${name}`,
    veth: `fx${id}v${i}`,
    peer: `fx${id}p${i}`,
    ip: `${net}.${10 + i}`,
  }));
  const script = netnsRemovalScript(bridge, plan);
  const watchdog = startNetnsWatchdog(script);
  const remove = () => sh('sh', ['-c', script]);
  const onExit = () => remove();
  process.once('exit', onExit);

  const rate = opts.rateMbit ?? 1000;
  let rateLimited = rate > 0;
  const hosts: NetnsHost[] = [];
  try {
    must('ip', ['link', 'add', bridge, 'type', 'bridge']);
    must('ip', ['addr', 'add', `${gatewayIp}/24`, 'dev', bridge]);
    must('ip', ['link', 'set', bridge, 'up']);
    const hostsFile = [
      '127.0.0.1 localhost',
      ...plan.map((p) => `${p.ip} ${p.name}`),
      ...Object.entries(opts.names ?? {}).map(([alias, host]) => {
        const p = plan.find((x) => x.name === host);
        if (!p) throw new FreshetError('CONFIG', `name ${alias} points at unknown host ${host}`);
        return `${p.ip} ${alias}`;
      }),
    ].join('\n');
    for (const p of plan) {
      must('ip', ['netns', 'add', p.ns]);
      mkdirSync(`/etc/netns/${p.ns}`, { recursive: true });
      writeFileSync(`/etc/netns/${p.ns}/hosts`, `${hostsFile}\n`);
      must('ip', ['link', 'add', p.veth, 'type', 'veth', 'peer', 'name', p.peer]);
      must('ip', ['link', 'set', p.peer, 'netns', p.ns]);
      must('ip', ['link', 'set', p.veth, 'master', bridge, 'up']);
      must('ip', ['-n', p.ns, 'link', 'set', p.peer, 'name', 'eth0']);
      must('ip', ['-n', p.ns, 'addr', 'add', `${p.ip}/24`, 'dev', 'eth0']);
      must('ip', ['-n', p.ns, 'link', 'set', 'eth0', 'up']);
      must('ip', ['-n', p.ns, 'link', 'set', 'lo', 'up']);
      must('ip', ['-n', p.ns, 'route', 'add', 'default', 'via', gatewayIp]);
      if (rateLimited) {
        const tbf = [
          'qdisc',
          'add',
          'dev',
          '',
          'root',
          'tbf',
          'rate',
          `${rate}mbit`,
          'burst',
          '1mb',
          'latency',
          '50ms',
        ];
        const out = sh(
          'tc',
          tbf.map((a) => (a === '' ? p.veth : a)),
        );
        const inside = sh('ip', ['netns', 'exec', p.ns, 'tc', ...tbf.map((a) => (a === '' ? 'eth0' : a))]);
        // a kernel without sch_tbf still runs the test, unlimited (and says so)
        if (!out.ok || !inside.ok) rateLimited = false;
      }
      const state = { up: true };
      hosts.push({
        name: p.name,
        ns: p.ns,
        ip: p.ip,
        get linkUp() {
          return state.up;
        },
        spawn(cmd, args, spawnOpts = {}) {
          return spawnChild('ip', ['netns', 'exec', p.ns, cmd, ...args], spawnOpts);
        },
        pids() {
          return sh('ip', ['netns', 'pids', p.ns])
            .out.split(/\s+/)
            .filter(Boolean)
            .map(Number)
            .filter((n) => Number.isInteger(n) && n > 0);
        },
        linkDown() {
          must('ip', ['link', 'set', p.veth, 'down']);
          state.up = false;
        },
        async killAll() {
          const deadline = Date.now() + 10_000;
          for (;;) {
            const left = this.pids();
            if (left.length === 0) return;
            if (Date.now() > deadline) {
              throw new FreshetError(
                'ILLEGAL_STATE',
                `processes of ${p.name} survive SIGKILL: ${left.join(' ')}`,
              );
            }
            for (const pid of left) {
              try {
                process.kill(pid, 'SIGKILL');
              } catch {
                // gone already
              }
            }
            await new Promise((r) => setTimeout(r, 20));
          }
        },
        async down() {
          this.linkDown();
          await this.killAll();
        },
        up() {
          must('ip', ['link', 'set', p.veth, 'up']);
          state.up = true;
        },
      });
    }
  } catch (e) {
    remove();
    stopNetnsWatchdog(watchdog);
    process.off('exit', onExit);
    throw e;
  }

  let destroyed = false;
  return {
    id,
    bridge,
    gatewayIp,
    hosts,
    rateLimited,
    host(name) {
      const h = hosts.find((x) => x.name === name);
      if (!h) throw new FreshetError('CONFIG', `no host ${name} (hosts: ${opts.hosts.join(', ')})`);
      return h;
    },
    async down(names) {
      const hs = names.map((n) => this.host(n));
      for (const h of hs) h.linkDown();
      await Promise.all(hs.map((h) => h.killAll()));
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      remove();
      stopNetnsWatchdog(watchdog);
      process.off('exit', onExit);
      // The kernel frees a namespace's veths once its last process is gone: wait for that,
      // then say what is left, if anything.
      const leftover = () => {
        const links = sh('ip', ['-o', 'link', 'show'])
          .out.split('\n')
          .filter((l) => l.includes(`fx${id}`));
        const nss = sh('ip', ['netns', 'list'])
          .out.split('\n')
          .filter((l) => l.includes(`freshet-${id}-`));
        return [...links, ...nss];
      };
      const deadline = Date.now() + 10_000;
      while (leftover().length > 0) {
        if (Date.now() > deadline) {
          throw new FreshetError('ILLEGAL_STATE', `lab ${id} left behind:\n${leftover().join('\n')}`);
        }
        remove();
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
}

/**
 * beforeAll/afterAll around a lab for one test file: made before its tests, removed after them
 * whether they passed, failed or timed out (and by the watchdog if the file's process dies).
 */
export function useNetnsLab(opts: NetnsLabOptions): { readonly lab: NetnsLab } {
  let lab: NetnsLab | undefined;
  beforeAll(() => {
    lab = createNetnsLab(opts);
  });
  afterAll(async () => {
    await lab?.destroy();
  });
  return {
    get lab(): NetnsLab {
      if (!lab) throw new Error('lab used outside a test (beforeAll has not run)');
      return lab;
    },
  };
}
