import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NatsConnection } from 'nats';
import {
  connectNats,
  issueRouteCerts,
  placementKv,
  readPlacement,
  startNatsCluster,
  startNatsServer,
  type NatsClusterHandle,
  type NatsServerHandle,
  type RouteTls,
} from '@freshet/nats';
import { ensureStream } from '@freshet/client';
import { FreshetError, subjects } from '@freshet/protocol';
import {
  clientTls,
  natsConnectionOptions,
  planActor,
  planActors,
  type ActorPlan,
  type ClusterConfig,
  shardHostNames,
} from './cluster-config.js';
import { clusterStreamOptions } from './cluster-init.js';
import { placeShards } from './shard-placement-ops.js';
import { discoverActors, str, type ActorStatus } from './discovery.js';
import { generateNatsAuth, tlsBlock, writeAuthFiles, type GeneratedAuth } from './nats-auth.js';
import { privateDir } from './private-files.js';
import type { RoleName } from './role-schemas.js';

/**
 * Where the built CLI entry lives, relative to this module and not the cwd. `../dist/` resolves
 * from both dist/ (built) and src/ (tests run the sources), so children always run built code.
 */
export const cliMainPath = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const reaperPath = fileURLToPath(new URL('../dist/reaper.js', import.meta.url));

/** The subset of a pino logger the local cluster uses. */
export interface ClusterLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

const silentLog: ClusterLog = { info() {}, warn() {}, error() {}, debug() {} };

export interface LocalClusterOptions {
  signal?: AbortSignal;
  log?: ClusterLog;
  /** Called with every output line of every role process (default: kept in a tail buffer only). */
  onOutput?: (id: string, line: string) => void;
  /** How long to wait for every actor to register as running (ms). */
  readyTimeoutMs?: number;
  /** SIGTERM → SIGKILL grace per process on stop (ms). */
  stopGraceMs?: number;
  /**
   * Client port of the (first) embedded nats-server; default: a free one. `freshet up` asks for
   * NATS's own 4222 so other commands find the cluster without flags.
   */
  natsPort?: number;
  /** Restart a role process that exits on its own (kill -9, crash). Default true. */
  restartOnExit?: boolean;
  /** Extra environment for role processes (secrets by file or env name, never argv). */
  env?: NodeJS.ProcessEnv;
  /**
   * Node arguments of a role process; default `[<cli main.js>, <role command>, --options-json, ...]`.
   * Tests substitute a stand-in actor script.
   */
  nodeArgs?: (plan: ActorPlan) => string[];
}

/** The default command line of a role process (after `node`). */
export function roleNodeArgs(plan: ActorPlan): string[] {
  const command = plan.command ?? (plan.role === 'serving' ? 'serve' : plan.role);
  return [cliMainPath, command, '--options-json', JSON.stringify(plan.options)];
}

/** One role process the local cluster runs. */
export interface LocalProcess {
  readonly role: RoleName;
  readonly id: string;
  readonly plan: ActorPlan;
  /** The current OS pid (changes on restart). */
  readonly pid: number;
  readonly running: boolean;
  /** Times it was restarted after exiting on its own. */
  readonly restarts: number;
  /** Last lines of stdout/stderr, for error messages. */
  output(): string;
  /** Sends a signal without stopping supervision (fault tests: SIGKILL, SIGSTOP). */
  kill(signal: NodeJS.Signals): void;
}

export interface LocalCluster {
  cluster: string;
  natsUrls: string[];
  config: ClusterConfig;
  processes: LocalProcess[];
  /** The embedded nats-servers (empty for external NATS). */
  natsServers: NatsServerHandle[];
  /** Route (cluster) ports of an embedded 3-node cluster, by server; empty otherwise. */
  natsRoutePorts: number[];
  /** An admin connection to the cluster's NATS. */
  nc: NatsConnection;
  /** The live actors as the service API reports them now. */
  actors(): Promise<ActorStatus[]>;
  /**
   * Starts one more worker or serving node in the running cluster and resolves once it reports
   * running; the roles rebalance (worker partitions move by lease) without a restart. Shards are
   * fixed: their count is the routing modulus.
   */
  add(role: 'worker' | 'serving'): Promise<LocalProcess>;
  /** Stops one actor (SIGTERM: it drains and hands its work back) and forgets it. */
  remove(id: string): Promise<void>;
  /** Stops every process it started (workers, serving, shards, then NATS). Idempotent. */
  stop(): Promise<void>;
  /** Resolves once stopped. */
  stopped: Promise<void>;
}

class Reaper {
  private child: ChildProcess | undefined;
  constructor(graceMs: number) {
    try {
      this.child = spawn(process.execPath, [reaperPath, String(graceMs)], {
        stdio: ['pipe', 'ignore', 'ignore'],
        detached: true,
      });
      this.child.on('error', () => (this.child = undefined));
      this.child.stdin?.on('error', () => undefined);
      this.child.unref();
      (this.child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    } catch {
      this.child = undefined;
    }
  }
  private send(line: string): void {
    if (this.child?.stdin?.writable) this.child.stdin.write(line + '\n');
  }
  watch(pid: number | undefined): void {
    if (pid) this.send(`+${pid}`);
  }
  unwatch(pid: number | undefined): void {
    if (pid) this.send(`-${pid}`);
  }
  close(): void {
    this.send('exit');
    this.child?.stdin?.end();
  }
}

const liveChildren = new Set<ChildProcess>();
let exitHook = false;
function track(c: ChildProcess): void {
  liveChildren.add(c);
  c.once('exit', () => liveChildren.delete(c));
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const ch of liveChildren) {
        try {
          if (ch.pid) process.kill(-ch.pid, 'SIGKILL');
        } catch {
          ch.kill('SIGKILL');
        }
      }
    });
  }
}

class RoleProcess implements LocalProcess {
  child: ChildProcess | undefined;
  restarts = 0;
  private tail: string[] = [];
  private stopping = false;
  private exitedOnce: Promise<void> = Promise.resolve();
  onUnexpectedExit: ((p: RoleProcess, code: number | null, sig: NodeJS.Signals | null) => void) | undefined;

  constructor(
    public plan: ActorPlan,
    private readonly env: NodeJS.ProcessEnv,
    private readonly reaper: Reaper,
    private readonly onOutput: ((id: string, line: string) => void) | undefined,
    private readonly nodeArgs: (plan: ActorPlan) => string[],
  ) {}

  get role(): RoleName {
    return this.plan.role;
  }
  /**
   * Keeps the HTTP port a serving node was given (0 in its options: any free one) for its
   * restarts, so the URL `freshet up` printed, and clients use, stays right after a crash.
   */
  pinHttpPort(port: number): void {
    const http = (this.plan.options.http ?? {}) as Record<string, unknown>;
    if (http.enabled === false || (typeof http.port === 'number' && http.port > 0)) return;
    this.plan = { ...this.plan, options: { ...this.plan.options, http: { ...http, port } } };
  }
  get id(): string {
    return this.plan.id;
  }
  get pid(): number {
    return this.child?.pid ?? -1;
  }
  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }
  output(): string {
    return this.tail.join('\n');
  }
  kill(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  start(): void {
    const args = this.nodeArgs(this.plan);
    // Detached: its own process group, so a terminal Ctrl-C reaches only the parent, which then
    // stops the cluster in order (workers before the shards they push to).
    const c = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: { ...process.env, ...this.env, FRESHET_ACTOR_ID: this.plan.id },
    });
    this.child = c;
    track(c);
    this.reaper.watch(c.pid);
    const onData = (b: Buffer) => {
      for (const line of b.toString().split('\n')) {
        if (!line) continue;
        this.tail.push(line);
        if (this.tail.length > 200) this.tail.shift();
        this.onOutput?.(this.plan.id, line);
      }
    };
    c.stdout?.on('data', onData);
    c.stderr?.on('data', onData);
    this.exitedOnce = new Promise((resolve) => {
      c.once('exit', (code, sig) => {
        this.reaper.unwatch(c.pid);
        resolve();
        if (!this.stopping) this.onUnexpectedExit?.(this, code, sig);
      });
    });
    c.once('error', (e) => this.tail.push(`spawn error: ${e.message}`));
  }

  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill('SIGTERM');
    const t = setTimeout(() => {
      try {
        if (c.pid) process.kill(-c.pid, 'SIGKILL');
      } catch {
        c.kill('SIGKILL');
      }
    }, graceMs);
    await this.exitedOnce;
    clearTimeout(t);
  }
}

/**
 * Starts a cluster on this machine: embedded nats-server(s) (unless the config names external
 * ones) and one child process per planned actor (`node <cli>/main.js <role> --options-json ...`).
 * Resolves once every actor reports through the service API; rejects (after stopping what it
 * started) when an actor exits or does not come up in time. No process outlives the parent:
 * stop(), the signal, an exit hook and, for a SIGKILLed parent, a reaper process see to it.
 */
export async function startLocalCluster(
  config: ClusterConfig,
  opts: LocalClusterOptions = {},
): Promise<LocalCluster> {
  const log = opts.log ?? silentLog;
  const graceMs = opts.stopGraceMs ?? 10_000;
  const reaper = new Reaper(graceMs);
  let nats: NatsClusterHandle | NatsServerHandle | undefined;
  let natsServers: NatsServerHandle[] = [];
  let natsRoutePorts: number[] = [];
  let nc: NatsConnection | undefined;
  const procs: RoleProcess[] = [];
  let makeProcess: ((plan: ActorPlan) => RoleProcess) | undefined;
  let actorUrls: string[] = [];
  let byEnvOptions = false;
  let stopPromise: Promise<void> | undefined;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => (resolveStopped = r));

  const stop = (): Promise<void> => {
    stopPromise ??= (async () => {
      log.info({ cluster: config.cluster }, 'stopping local cluster');
      // Producers of work first, then consumers of it, then the bus.
      for (const role of ['worker', 'serving', 'shard'] as const) {
        await Promise.all(procs.filter((p) => p.role === role).map((p) => p.stop(graceMs)));
      }
      await nc?.close().catch(() => undefined);
      if (nats) await nats.stop();
      reaper.close();
      log.info({ cluster: config.cluster }, 'local cluster stopped');
      resolveStopped();
    })();
    return stopPromise;
  };

  const onAbort = () => void stop();
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    if (opts.signal?.aborted) throw new FreshetError('SHUTTING_DOWN', 'aborted before start');
    await mkdir(config.dataDir, { recursive: true });
    let urls: string[];
    const n = config.nats;
    // Generated auth: one nkey user per role, seeds in files only this user can read.
    let gen: { auth: GeneratedAuth; dir: string } | undefined;
    if (n.auth.generate) {
      const auth = generateNatsAuth({ cluster: config.cluster });
      const dir = join(config.dataDir, 'nats-auth');
      await writeAuthFiles(dir, auth);
      gen = { auth, dir };
    }
    const extra = [gen?.auth.config, n.tls ? tlsBlock({ ...n.tls, verify: n.tls.verifyClients }) : undefined]
      .filter(Boolean)
      .join('\n');
    const extraConfig = extra ? { extraConfig: extra } : {};
    const storeDir = n.persist ? join(config.dataDir, 'nats') : undefined;
    if (n.embedded === 3) {
      // one certificate for the three nodes: they share the host they are dialled at
      let routeTls: RouteTls | undefined;
      if (n.routeTls) {
        const dir = join(config.dataDir, 'nats-route-tls');
        await privateDir(dir);
        routeTls = issueRouteCerts(dir, { hosts: [...new Set([n.host, '127.0.0.1', 'localhost'])] }).nodes[0];
      }
      const c = await startNatsCluster(3, {
        name: `freshet-${config.cluster}`,
        ...(routeTls ? { routeTls: [routeTls, routeTls, routeTls] } : {}),
        ...(opts.natsPort ? { clientPorts: [opts.natsPort] } : {}),
        host: n.host,
        maxPayload: n.maxPayload,
        ...(storeDir ? { storeDir } : {}),
        ...extraConfig,
      });
      nats = c;
      natsServers = c.servers;
      natsRoutePorts = c.routePorts;
      urls = c.urls;
    } else if (n.embedded === 1) {
      const s = await startNatsServer({
        host: n.host,
        ...(opts.natsPort ? { port: opts.natsPort } : {}),
        maxPayload: n.maxPayload,
        ...(storeDir ? { storeDir: join(storeDir, '0') } : {}),
        ...extraConfig,
      });
      nats = s;
      natsServers = [s];
      urls = [s.url];
    } else {
      urls = n.urls;
    }
    for (const s of natsServers) reaper.watch(s.pid);
    log.info({ cluster: config.cluster, urls }, 'nats ready');
    const connOpts = natsConnectionOptions(config, urls, { ...process.env, ...opts.env });
    if (gen) connOpts.nkeySeedFile = join(gen.dir, 'admin.nk');
    nc = await connectNats(connOpts, `freshet-up-${config.cluster}`, {
      inboxPrefix: subjects(config.cluster).inboxPrefix('admin'),
    });

    const env: NodeJS.ProcessEnv = { ...opts.env };
    const auth = config.nats.auth;
    if (auth.passFile) env.FRESHET_NATS_PASS_FILE = auth.passFile;
    if (auth.passEnv && connOpts.pass !== undefined) env.FRESHET_NATS_PASS = connOpts.pass;
    if (auth.tokenEnv && connOpts.token !== undefined) env.FRESHET_NATS_TOKEN = connOpts.token;
    // Role processes read NATS secrets from FRESHET_NATS_* only when their options carry no
    // `nats` object, so with secrets the connection travels entirely by environment.
    const byEnv = !!(auth.passFile || auth.passEnv || auth.tokenEnv || gen);
    if (byEnv) {
      env.FRESHET_NATS_URL = urls.join(',');
      if (auth.user) env.FRESHET_NATS_USER = auth.user;
      if (auth.credsFile) env.FRESHET_NATS_CREDS = auth.credsFile;
      const tls = clientTls(config);
      if (tls?.caFile) env.FRESHET_NATS_CA = tls.caFile;
    }

    await ensureStreamWithRetry(nc, config, opts);
    log.info(
      { cluster: config.cluster, partitions: config.partitions, replicas: config.nats.replicas },
      'feedback stream ready',
    );
    if (config.shards.hosts !== undefined) {
      // the first start spreads the shards over the hosts; a restart keeps where they were moved
      const placed = await readPlacement(await placementKv(nc, config.cluster));
      const p =
        placed?.value ??
        (await placeShards(nc, config.cluster, {
          hosts: shardHostNames(config.shards.hosts),
          shards: config.shards.count,
          wait: false,
        }));
      log.info({ cluster: config.cluster, epoch: p.epoch, hosts: p.hosts }, 'shard placement');
    }

    actorUrls = urls;
    byEnvOptions = byEnv;
    const plans = planActors(config, urls).map((p) => {
      if (!byEnv) return p;
      const { nats: _nats, ...options } = p.options;
      return { ...p, options };
    });
    let failure: Error | undefined;
    let ready = false;
    makeProcess = (plan: ActorPlan): RoleProcess => {
      const roleEnv: NodeJS.ProcessEnv = gen
        ? {
            ...env,
            FRESHET_NATS_NKEY_FILE: join(gen.dir, `${plan.role}.nk`),
            FRESHET_NATS_INBOX_PREFIX: gen.auth.users[plan.role].inboxPrefix,
          }
        : env;
      const p = new RoleProcess(plan, roleEnv, reaper, opts.onOutput, opts.nodeArgs ?? roleNodeArgs);
      p.onUnexpectedExit = (proc, code, sig) => {
        const why = `${proc.id} exited (${code ?? sig})`;
        if (!ready) {
          failure ??= new FreshetError('UNAVAILABLE', `${why} during start:\n${proc.output().slice(-3000)}`);
          return;
        }
        if (stopPromise || opts.restartOnExit === false) {
          log.error({ actor: proc.id, code, signal: sig }, `${why}; not restarting`);
          return;
        }
        if (code === 0) {
          // A clean exit is a decision (`freshet drain`), not a crash: respect it.
          log.info({ actor: proc.id }, `${proc.id} drained and exited; not restarting`);
          return;
        }
        proc.restarts++;
        // Back off a little on repeated crashes so a broken config does not spin the CPU.
        const delay = Math.min(5000, 200 * 2 ** Math.min(proc.restarts - 1, 5));
        log.warn(
          { actor: proc.id, code, signal: sig, restarts: proc.restarts, delayMs: delay },
          `${why}; restarting`,
        );
        setTimeout(() => {
          if (!stopPromise) proc.start();
        }, delay).unref();
      };
      return p;
    };
    for (const plan of plans) procs.push(makeProcess(plan));
    // Shards first: workers and serving nodes pull from them as they start.
    for (const p of procs.filter((x) => x.role === 'shard')) p.start();
    await waitActors(
      nc,
      config,
      procs.filter((p) => p.role === 'shard'),
      opts,
      () => failure,
    );
    for (const p of procs.filter((x) => x.role !== 'shard')) p.start();
    await waitActors(nc, config, procs, opts, () => failure);
    await pinServingPorts(nc, config.cluster, procs);
    ready = true;
    log.info({ cluster: config.cluster, actors: procs.map((p) => p.id) }, 'local cluster ready');
  } catch (e) {
    await stop();
    opts.signal?.removeEventListener('abort', onAbort);
    throw e;
  }
  const conn = nc;
  return {
    cluster: config.cluster,
    natsUrls: natsServers.length ? natsServers.map((s) => s.url) : config.nats.urls,
    config,
    processes: procs,
    natsServers,
    natsRoutePorts,
    nc: conn,
    actors: () => discoverActors(conn, { cluster: config.cluster }),
    add: async (role) => {
      if (stopPromise || !makeProcess)
        throw new FreshetError('SHUTTING_DOWN', 'the local cluster is stopping');
      const index = Math.max(-1, ...procs.filter((p) => p.role === role).map((p) => p.plan.index)) + 1;
      let plan = planActor(config, role, index, actorUrls);
      if (byEnvOptions) {
        const { nats: _nats, ...options } = plan.options;
        plan = { ...plan, options };
      }
      const p = makeProcess(plan);
      procs.push(p);
      p.start();
      let failed: Error | undefined;
      const prev = p.onUnexpectedExit;
      p.onUnexpectedExit = (proc, code, sig) => {
        failed = new FreshetError(
          'UNAVAILABLE',
          `${proc.id} exited (${code ?? sig}) during start:\n${proc.output().slice(-3000)}`,
        );
      };
      try {
        await waitActors(conn, config, procs, opts, () => failed);
        if (p.role === 'serving') await pinServingPorts(conn, config.cluster, [p]);
      } catch (e) {
        await p.stop(graceMs);
        procs.splice(procs.indexOf(p), 1);
        throw e;
      } finally {
        p.onUnexpectedExit = prev;
      }
      return p;
    },
    remove: async (id) => {
      const p = procs.find((x) => x.id === id);
      if (!p)
        throw new FreshetError('CONFIG', `no process ${id} (have: ${procs.map((x) => x.id).join(', ')})`);
      if (p.role === 'shard')
        throw new FreshetError('CONFIG', 'shards cannot be removed: their count routes the keys');
      await p.stop(graceMs);
      procs.splice(procs.indexOf(p), 1);
    },
    stop: async () => {
      opts.signal?.removeEventListener('abort', onAbort);
      await stop();
    },
    stopped,
  };
}

/** A fresh JetStream cluster elects its meta leader after start: retry until it answers. */
async function ensureStreamWithRetry(nc: NatsConnection, config: ClusterConfig, opts: LocalClusterOptions) {
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
  for (;;) {
    try {
      return await ensureStream(nc, clusterStreamOptions(config));
    } catch (e) {
      if (Date.now() > deadline || opts.signal?.aborted) {
        throw new FreshetError('UNAVAILABLE', `cannot create the feedback stream: ${(e as Error).message}`, {
          cause: e,
        });
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Pins each serving node's reported HTTP port for its restarts (see RoleProcess.pinHttpPort). */
async function pinServingPorts(nc: NatsConnection, cluster: string, procs: RoleProcess[]): Promise<void> {
  const serving = procs.filter((p) => p.role === 'serving');
  if (serving.length === 0) return;
  for (const a of await discoverActors(nc, { cluster, roles: ['serving'], maxWaitMs: 300 })) {
    const port = Number(/:(\d+)\/?$/.exec(str(a.status, 'http') ?? '')?.[1]);
    if (port > 0) serving.find((p) => p.id === a.id)?.pinHttpPort(port);
  }
}

/** True when the actor's reported state allows work (roles without a state field count as ready). */
function isRunning(a: ActorStatus): boolean {
  const s = str(a.status, 'state', 'status');
  return s === undefined || s === 'running';
}

async function waitActors(
  nc: NatsConnection,
  config: ClusterConfig,
  procs: RoleProcess[],
  opts: LocalClusterOptions,
  failed: () => Error | undefined,
): Promise<void> {
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
  const want = new Map<RoleName, number>();
  for (const p of procs) want.set(p.role, (want.get(p.role) ?? 0) + 1);
  for (;;) {
    const f = failed();
    if (f) throw f;
    if (opts.signal?.aborted) throw new FreshetError('SHUTTING_DOWN', 'aborted while starting');
    const actors = await discoverActors(nc, { cluster: config.cluster, maxWaitMs: 250 }).catch(() => []);
    const have = new Map<RoleName, number>();
    for (const a of actors) if (isRunning(a)) have.set(a.role, (have.get(a.role) ?? 0) + 1);
    if ([...want].every(([r, n]) => (have.get(r) ?? 0) >= n)) return;
    if (Date.now() > deadline) {
      const missing = [...want].map(([r, n]) => `${r}: ${have.get(r) ?? 0}/${n}`).join(', ');
      const tails = procs
        .map(
          (p) =>
            `--- ${p.id} (pid ${p.pid}, ${p.running ? 'running' : 'exited'})\n${p.output().slice(-1500)}`,
        )
        .join('\n');
      throw new FreshetError(
        'TIMEOUT',
        `actors not ready after ${opts.readyTimeoutMs ?? 60_000} ms (${missing} running). ` +
          `Check the role processes' output below, or raise readyTimeoutMs.\n${tails}`,
      );
    }
    await new Promise((r) => setTimeout(r, 150));
  }
}
