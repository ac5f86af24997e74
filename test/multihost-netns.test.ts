import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createNetnsLab, netnsRemovalScript, rewriteMountPaths, waitFor } from '@freshet/testkit';
import { repoRoot } from './fault-kit.js';

const ip = (args: string[]) => spawnSync('ip', args, { encoding: 'utf8' }).stdout ?? '';
const leftovers = (id: string) =>
  [...ip(['-o', 'link', 'show']).split('\n'), ...ip(['netns', 'list']).split('\n')].filter(
    (l) => l.includes(`fx${id}`) || l.includes(`freshet-${id}-`),
  );

/** Alive and not a zombie (`kill -0` succeeds on a zombie). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** One line from a TCP server at `host:port`, dialled from `from` (a netns host) with node. */
function dialFrom(ns: string, host: string, port: number): { ok: boolean; out: string } {
  const script = `const s=require('net').connect(${port},'${host}');s.setTimeout(1500,()=>{console.log('timeout');process.exit(1)});s.on('data',d=>{process.stdout.write(String(d));process.exit(0)});s.on('error',e=>{console.log(e.code);process.exit(1)})`;
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}`.trim() };
}

/**
 * The netns lab of the multi-host test on its own: hosts reach each other by address and by
 * name, a host that goes down is unreachable and its processes are gone, and nothing of a lab
 * is left after destroy, nor after its owning process is SIGKILLed (the watchdog removes it).
 */
describe('netns lab', () => {
  it('connects hosts, takes one down and back, and removes everything', async () => {
    const lab = createNetnsLab({ hosts: ['a', 'b'], rateMbit: 100, names: { 'svc-b.test': 'b' } });
    try {
      const a = lab.host('a');
      const b = lab.host('b');
      expect(a.ip).not.toBe(b.ip);
      // a TCP server inside b answers a's connection by address and by name
      const script =
        "require('net').createServer(s=>s.end('hello\\n')).listen(7001,'0.0.0.0',()=>console.log('listening'))";
      const server = b.spawn(process.execPath, ['-e', script]);
      await waitFor(() => server.output().includes('listening'), { message: 'server in b' });
      expect(dialFrom(a.ns, b.ip, 7001)).toEqual({ ok: true, out: 'hello' });
      expect(dialFrom(a.ns, 'svc-b.test', 7001)).toEqual({ ok: true, out: 'hello' });
      // the root namespace (the test process) reaches it over the bridge
      const fromRoot = await new Promise<string>((resolve, reject) => {
        const s = connect(7001, b.ip);
        s.on('data', (d) => resolve(String(d).trim()));
        s.on('error', reject);
      });
      expect(fromRoot).toBe('hello');

      await lab.down(['b']);
      expect(b.pids()).toEqual([]);
      expect(b.linkUp).toBe(false);
      await server.exited;
      expect(dialFrom(a.ns, b.ip, 7001).ok).toBe(false);
      b.up();
      const again = b.spawn(process.execPath, ['-e', script]);
      await waitFor(() => again.output().includes('listening'), { message: 'server in b again' });
      await waitFor(() => dialFrom(a.ns, b.ip, 7001).ok, { timeoutMs: 10_000, message: 'b reachable again' });
    } finally {
      await lab.destroy();
    }
    expect(leftovers(lab.id)).toEqual([]);
    // the root namespace's own listener is untouched (a port inside a host is the host's)
    const probe = createServer().listen(7001, '127.0.0.1');
    await new Promise((r) => probe.once('listening', r));
    probe.close();
  });

  it('is removed by its watchdog when the process that made it is killed with SIGKILL', async () => {
    // a plain process (no vitest) makes a bridge, a namespace with a veth and a sleeper in it,
    // and the lab's watchdog, as createNetnsLab does; then it is killed without warning
    const id = randomBytes(3).toString('hex');
    const ns = `freshet-${id}-x`;
    const owner = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { execFileSync, spawn } from 'node:child_process';
         import { netnsRemovalScript, startNetnsWatchdog } from './packages/testkit/dist/netns-watchdog.js';
         const ip = (...a) => execFileSync('ip', a);
         startNetnsWatchdog(netnsRemovalScript('fx${id}b', [{ ns: '${ns}', veth: 'fx${id}v0' }]));
         ip('link', 'add', 'fx${id}b', 'type', 'bridge');
         ip('netns', 'add', '${ns}');
         ip('link', 'add', 'fx${id}v0', 'type', 'veth', 'peer', 'name', 'fx${id}p0');
         ip('link', 'set', 'fx${id}p0', 'netns', '${ns}');
         ip('link', 'set', 'fx${id}v0', 'master', 'fx${id}b');
         spawn('ip', ['netns', 'exec', '${ns}', 'sleep', '600'], { detached: true, stdio: 'ignore' }).unref();
         console.log('made');
         setInterval(() => {}, 1000);`,
      ],
      { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    owner.stdout.on('data', (b: Buffer) => (out += String(b)));
    owner.stderr.on('data', (b: Buffer) => (out += String(b)));
    try {
      await waitFor(() => out.includes('made'), { timeoutMs: 30_000, message: () => `lab made: ${out}` });
      const sleeper = await waitFor(() => ip(['netns', 'pids', ns]).trim(), { message: 'the sleeper' });
      expect(leftovers(id).length).toBeGreaterThanOrEqual(3); // bridge, veth, namespace
      owner.kill('SIGKILL');
      await waitFor(() => leftovers(id).length === 0, {
        timeoutMs: 15_000,
        message: () => `lab ${id} removed: ${leftovers(id).join('; ')}`,
      });
      // the process inside the lab went with it (dead: gone, or a zombie its new parent has not reaped)
      await waitFor(() => !running(Number(sleeper)), {
        timeoutMs: 5000,
        message: `sleeper ${sleeper} killed`,
      });
    } finally {
      owner.kill('SIGKILL');
      spawnSync('sh', ['-c', netnsRemovalScript(`fx${id}b`, [{ ns, veth: `fx${id}v0` }])]);
    }
  });

  it('fails with the reason, never skips, where namespaces cannot be made', () => {
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent'; // no `ip`: what a machine without iproute2 looks like
    try {
      expect(() => createNetnsLab({ hosts: ['a'] })).toThrow(/network namespaces unavailable: .*iproute2/);
    } finally {
      process.env.PATH = path;
    }
  });

  it('rewrites absolute paths under mount points, and nothing else', () => {
    const mounts = ['/etc/nats/auth', '/etc/nats/nats.conf', '/data'];
    const text =
      'store_dir: /data\ninclude ./auth/a.conf\ncert_file: "/etc/nats/auth/route.pem"\n' +
      'url: nats://nats-0.nats:4222 /database /etc/nats/other {"dataDir":"/data"}';
    expect(rewriteMountPaths(text, mounts, '/pod')).toBe(
      'store_dir: /pod/data\ninclude ./auth/a.conf\ncert_file: "/pod/etc/nats/auth/route.pem"\n' +
        'url: nats://nats-0.nats:4222 /database /etc/nats/other {"dataDir":"/pod/data"}',
    );
  });
});
