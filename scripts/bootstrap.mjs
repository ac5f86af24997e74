#!/usr/bin/env node
// Entry for the README's two commands (`npm test`, `npm run demo`) on a machine that may have
// nothing but Node and npm: brings the pinned pnpm, the locked dependencies and nats-server,
// builds, then runs the job. Plain Node on purpose: it runs before any dependency exists.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, delimiter } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const job = process.argv[2];
if (job !== 'test' && job !== 'demo') {
  console.error('usage: node scripts/bootstrap.mjs test|demo [args...]');
  process.exit(2);
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts });
  if (r.error) throw r.error;
  return r.status ?? 1;
}
function ok(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'], cwd: root });
  return r.status === 0 ? String(r.stdout).trim() : null;
}
function step(msg) {
  console.error(`[freshet] ${msg}`);
}

// 1. pnpm, at the version pinned in packageManager.
const wanted = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).packageManager.split('@')[1];
if (ok('pnpm', ['--version']) !== wanted) {
  step(`installing pnpm@${wanted} with npm`);
  if (run('npm', ['install', '-g', '--no-fund', '--no-audit', `pnpm@${wanted}`]) !== 0) {
    console.error(
      `[freshet] could not install pnpm@${wanted}; install it yourself: npm install -g pnpm@${wanted}`,
    );
    process.exit(1);
  }
  const npmBin = ok('npm', ['prefix', '-g']);
  if (npmBin) process.env.PATH = `${join(npmBin, 'bin')}${delimiter}${process.env.PATH}`;
}

// 2. Locked dependencies. Optional native builds (tfjs-node) may fail offline; that is fine.
const lock = existsSync(join(root, 'pnpm-lock.yaml'));
if (
  run('pnpm', [
    'install',
    lock ? '--frozen-lockfile' : '--no-frozen-lockfile',
    '--prefer-offline',
    '--reporter=silent',
  ]) !== 0
) {
  console.error('[freshet] pnpm install failed (see above)');
  process.exit(1);
}

// 3. System packages: nats-server (both jobs) and, for the tests, Chromium (the dashboard and
// report tests drive it headless). FRESHET_NATS_SERVER / FRESHET_CHROMIUM, else PATH, else one
// apt-get run as root on Debian/Ubuntu.
function natsServer() {
  const env = process.env.FRESHET_NATS_SERVER;
  if (env) return existsSync(env) ? env : null;
  return ok('sh', ['-c', 'command -v nats-server']);
}
function chromium() {
  const env = process.env.FRESHET_CHROMIUM;
  if (env) return existsSync(env) ? env : null;
  return ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p)) ?? null;
}
const missing = [];
if (!natsServer()) missing.push('nats-server');
if (job === 'test' && !chromium()) missing.push('chromium');
// the deploy test renders deploy/k8s with `kubectl kustomize`
if (job === 'test' && !ok('sh', ['-c', 'command -v kubectl'])) missing.push('kubectl');
// the multi-host test makes network namespaces, veths and tc limits with iproute2
if (job === 'test' && !ok('sh', ['-c', 'command -v ip && command -v tc'])) missing.push('iproute2');
if (missing.length) {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (isRoot && ok('sh', ['-c', 'command -v apt-get'])) {
    step(`installing ${missing.join(', ')} with apt-get`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    run('apt-get', ['update', '-qq'], { env });
    run('apt-get', ['install', '-y', '-qq', ...missing], { env });
  }
  if (!natsServer()) {
    console.error(
      '[freshet] nats-server not found. Install it (Debian/Ubuntu: apt-get install nats-server; ' +
        'elsewhere: https://github.com/nats-io/nats-server/releases) or set FRESHET_NATS_SERVER to its path.',
    );
    process.exit(1);
  }
  if (job === 'test' && !chromium()) {
    console.error(
      '[freshet] chromium not found (the dashboard tests need it): apt-get install chromium, or set FRESHET_CHROMIUM.',
    );
    process.exit(1);
  }
}

// 4. The job. Ctrl-C reaches the child too (same process group); the parent waits for its
// clean shutdown instead of dying first and returning the prompt early.
process.on('SIGINT', () => {});
process.on('SIGTERM', () => {});
const extra = process.argv.slice(3);
let status;
if (job === 'test') {
  step('checking (build, types, lint, format)');
  status = run('pnpm', ['-s', 'run', 'check']);
  if (status === 0) status = run('pnpm', ['-s', 'exec', 'vitest', 'run', ...extra]);
} else {
  status = run('pnpm', ['-s', 'run', 'build']);
  if (status === 0) status = run('node', ['packages/cli/dist/main.js', 'demo', ...extra]);
}
process.exit(status);
