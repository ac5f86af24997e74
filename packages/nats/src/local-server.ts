import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { FreshetError } from '@freshet/protocol';

/**
 * Starts and stops real nats-server processes: the embedded local cluster (`freshet demo`,
 * `freshet up`) and the test harness use the same launcher.
 */

export interface NatsServerOptions {
  /** Defaults to 127.0.0.1: nothing is exposed unless asked for. */
  host?: string;
  /** Client port; 0 picks a free one. */
  port?: number;
  jetstream?: boolean;
  /** JetStream store; a fresh temporary directory (removed on stop) when omitted. */
  storeDir?: string;
  serverName?: string;
  /** Bytes; Freshet frames need more than NATS's 1 MiB default. */
  maxPayload?: number;
  /**
   * Route clustering: this node's cluster port and its peers' route URLs. With `auth`, only
   * servers that present it may connect as routes (and the routes present it to their peers).
   */
  cluster?: { name: string; port: number; routes: string[]; auth?: RouteAuth; tls?: RouteTls };
  /** HTTP monitoring port (0 picks one), bound to `host` (loopback by default); off when omitted. */
  monitorPort?: number;
  /** Extra configuration text appended verbatim (authorization, tls...). */
  extraConfig?: string;
  /** Milliseconds to wait for "Server is ready". */
  readyTimeoutMs?: number;
}

/** The shared secret of a cluster's route connections. */
export interface RouteAuth {
  user: string;
  password: string;
}

/**
 * Mutual TLS on route connections: this node's certificate and key, and the CA every peer's
 * certificate must chain to. Each side verifies the other, so a server without a certificate
 * from that CA cannot join as a route, and route traffic (all messages) is encrypted. The
 * certificate must name the host the peers dial (an IP SAN for 127.0.0.1).
 */
export interface RouteTls {
  certFile: string;
  keyFile: string;
  caFile: string;
}

/** A random route secret (URL-safe, so it can sit in `nats-route://user:pass@host:port`). */
export function generateRouteAuth(): RouteAuth {
  return { user: 'route', password: randomBytes(24).toString('base64url') };
}

/** A route URL that presents `auth`. */
export function routeUrl(host: string, port: number, auth?: RouteAuth): string {
  const cred = auth ? `${encodeURIComponent(auth.user)}:${encodeURIComponent(auth.password)}@` : '';
  return `nats-route://${cred}${host}:${port}`;
}

export interface NatsServerHandle {
  url: string;
  port: number;
  /** The HTTP monitoring URL, when `monitorPort` was given. */
  monitorUrl: string | undefined;
  /** The server_name it runs under (what JetStream reports as a stream's leader), when set. */
  name: string | undefined;
  pid: number;
  storeDir: string;
  configFile: string;
  /** Graceful stop (SIGTERM, then SIGKILL after a grace period); removes temporary stores. */
  stop(): Promise<void>;
  /** Sends a signal without cleanup: fault tests use SIGKILL/SIGSTOP. */
  kill(signal: NodeJS.Signals): void;
  /** Starts the same server again (same port, store and config) after a stop or kill. */
  restart(): Promise<void>;
  readonly running: boolean;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function trackChild(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Last line of defence against orphans when the parent exits without stopping its servers.
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
}

/** The nats-server binary: FRESHET_NATS_SERVER, else PATH. Throws a how-to-install error. */
export function findNatsServer(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.FRESHET_NATS_SERVER;
  if (explicit) {
    if (existsSync(explicit)) return explicit;
    throw new FreshetError('CONFIG', `FRESHET_NATS_SERVER=${explicit} does not exist`);
  }
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    const p = join(dir, 'nats-server');
    if (dir && existsSync(p)) return p;
  }
  throw new FreshetError(
    'CONFIG',
    'nats-server not found on PATH. Install it (Debian/Ubuntu: apt-get install nats-server; or run `npm test`, ' +
      'which installs it as root) or set FRESHET_NATS_SERVER to the binary.',
  );
}

/** The nats-server version string, e.g. "2.9.10". */
export function natsServerVersion(bin = findNatsServer()): string {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  return /v?(\d+\.\d+\.\d+)/.exec(r.stdout ?? '')?.[1] ?? 'unknown';
}

/** A free TCP port on loopback (for cluster routes, which must be known before start). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function configText(
  o: Required<Pick<NatsServerOptions, 'host' | 'maxPayload'>> & NatsServerOptions,
  port: number,
  storeDir: string,
  monitorPort: number | undefined,
): string {
  const q = (v: string) => JSON.stringify(v);
  const lines = [`host: "${o.host}"`, `port: ${port}`, `max_payload: ${o.maxPayload}`];
  if (o.serverName) lines.push(`server_name: "${o.serverName}"`);
  // The monitor answers anyone who reaches it (no auth in nats-server): same host as the
  // clients, loopback unless asked otherwise.
  if (monitorPort !== undefined) lines.push(`http: "${o.host}:${monitorPort}"`);
  if (o.jetstream !== false) lines.push(`jetstream { store_dir: "${storeDir}" }`);
  if (o.cluster) {
    const auth = o.cluster.auth
      ? ` authorization { user: ${q(o.cluster.auth.user)}, password: ${q(o.cluster.auth.password)}, timeout: 2 },`
      : '';
    const t = o.cluster.tls;
    const tls = t
      ? ` tls { cert_file: ${q(t.certFile)}, key_file: ${q(t.keyFile)}, ca_file: ${q(t.caFile)}, verify: true, timeout: 2 },`
      : '';
    lines.push(
      `cluster { name: "${o.cluster.name}", host: "${o.host}", port: ${o.cluster.port},${auth}${tls} routes: [${o.cluster.routes
        .map((r) => q(r))
        .join(', ')}] }`,
    );
  }
  if (o.extraConfig) lines.push(o.extraConfig);
  return lines.join('\n') + '\n';
}

/** Starts nats-server and resolves once it accepts clients. */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const bin = findNatsServer();
  const o = { host: '127.0.0.1', maxPayload: 8 * 1024 * 1024, readyTimeoutMs: 20_000, ...options };
  const work = await mkdtemp(join(tmpdir(), 'freshet-nats-'));
  const storeDir = o.storeDir ?? join(work, 'js');
  const port = o.port && o.port > 0 ? o.port : await freePort(o.host);
  const monitorPort =
    o.monitorPort === undefined ? undefined : o.monitorPort > 0 ? o.monitorPort : await freePort(o.host);
  const configFile = join(work, 'nats.conf');
  // It holds route secrets and, with generated auth, the user list: private to this user.
  await writeFile(configFile, configText(o, port, storeDir, monitorPort), { mode: 0o600 });

  let child: ChildProcess | undefined;
  const launch = async (): Promise<void> => {
    // Detached: its own process group, so a Ctrl-C on the terminal reaches only the parent,
    // which stops NATS last, after the roles have drained through it. Orphans are still
    // covered: the exit hook below, stop(), and the CLI's reaper (which signals the group).
    const c = spawn(bin, ['-c', configFile], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    child = c;
    trackChild(c);
    let log = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        c.kill('SIGKILL');
        reject(
          new FreshetError(
            'TIMEOUT',
            `nats-server not ready after ${o.readyTimeoutMs} ms:\n${log.slice(-2000)}`,
          ),
        );
      }, o.readyTimeoutMs);
      const onData = (b: Buffer) => {
        log += b.toString();
        if (log.includes('Server is ready')) {
          clearTimeout(timer);
          c.stderr?.off('data', onData);
          c.stderr?.resume(); // keep draining so the pipe never blocks the server
          resolve();
        }
      };
      c.stderr?.on('data', onData);
      c.once('exit', (code, sig) => {
        clearTimeout(timer);
        reject(
          new FreshetError(
            'UNAVAILABLE',
            `nats-server exited (${code ?? sig}) before ready:\n${log.slice(-2000)}`,
          ),
        );
      });
      c.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  };
  await launch();

  const stopChild = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };
  return {
    url: `nats://${o.host}:${port}`,
    port,
    monitorUrl: monitorPort === undefined ? undefined : `http://${o.host}:${monitorPort}`,
    name: o.serverName,
    get pid() {
      return child?.pid ?? -1;
    },
    storeDir,
    configFile,
    get running() {
      return !!child && child.exitCode === null && child.signalCode === null;
    },
    kill(signal) {
      child?.kill(signal);
    },
    async restart() {
      await stopChild();
      await launch();
    },
    async stop() {
      await stopChild();
      await rm(work, { recursive: true, force: true });
    },
  };
}

/** A route-clustered set of nats-servers on loopback (JetStream replicated across them). */
export interface NatsClusterHandle {
  servers: NatsServerHandle[];
  /** The route cluster's name, its servers' route ports and the secret routes present. */
  name: string;
  routePorts: number[];
  routeAuth: RouteAuth;
  /** All client URLs, for a connection that fails over. */
  urls: string[];
  stop(): Promise<void>;
}

/**
 * Starts `size` route-clustered servers. Routes always authenticate: with `routeAuth`, or else a
 * random secret made here (a server without it cannot join as a route and see all traffic).
 */
export async function startNatsCluster(
  size = 3,
  options: Omit<NatsServerOptions, 'cluster' | 'port' | 'serverName'> & {
    name?: string;
    routeAuth?: RouteAuth;
    /** Client ports by server index (missing or 0: a free one), e.g. `[4222]` for the first. */
    clientPorts?: number[];
    /** Route TLS by server index (each node its own certificate, one CA); off when omitted. */
    routeTls?: RouteTls[];
  } = {},
): Promise<NatsClusterHandle> {
  const { name: clusterName, routeAuth: givenAuth, clientPorts = [], routeTls, ...serverOptions } = options;
  if (routeTls && routeTls.length !== size) {
    throw new FreshetError('CONFIG', `route TLS for ${routeTls.length} servers, the cluster has ${size}`);
  }
  const name = clusterName ?? 'freshet';
  const routeAuth = givenAuth ?? generateRouteAuth();
  const host = serverOptions.host ?? '127.0.0.1';
  const routePorts = await Promise.all(Array.from({ length: size }, () => freePort(host)));
  const routes = routePorts.map((p) => routeUrl(host, p, routeAuth));
  const servers = await Promise.all(
    routePorts.map((p, i) =>
      startNatsServer({
        ...serverOptions,
        // one store per server (the cluster's RAFT state lives there, by server name)
        ...(serverOptions.storeDir ? { storeDir: join(serverOptions.storeDir, String(i)) } : {}),
        serverName: `${name}-${i}`,
        ...(clientPorts[i] ? { port: clientPorts[i] } : {}),
        cluster: {
          name,
          port: p,
          routes: routes.filter((_, j) => j !== i),
          auth: routeAuth,
          ...(routeTls ? { tls: routeTls[i] } : {}),
        },
      }),
    ),
  );
  return {
    servers,
    name,
    routePorts,
    routeAuth,
    urls: servers.map((s) => s.url),
    async stop() {
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}
