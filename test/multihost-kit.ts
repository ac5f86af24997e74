import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseClusterConfig } from '@freshet/cli';
import type { ModelConfigInput } from '@freshet/model';
import { parseReadyLine } from '@freshet/nats';
import {
  findNatsServer,
  k8sPodNames,
  k8sPods,
  materializePod,
  waitFor,
  type ChildHandle,
  type ImageRuntime,
  type K8sManifests,
  type K8sPod,
  type NetnsHost,
  type NetnsLab,
  type PodLaunch,
} from '@freshet/testkit';
import { repoRoot } from './fault-kit.js';

/**
 * The Freshet side of the multi-host test (docs/multi-host-test.md): the Kubernetes base in
 * deploy/k8s/base read as it is, its pods placed on netns hosts, started with their own
 * command, args and env. What Kubernetes or the operator would provide, and nothing else, is
 * provided here:
 *
 * - the `nats-auth` Secret: the files `freshet config auth --cluster <cluster> --out DIR
 *   --route-tls --routes <nats pods>:<cluster port>` writes (the step the production overlay
 *   describes), plus one test-only user, `observer`, with no permission limits (the test's push
 *   ledger listens on the workers' reply inboxes, which no role may read);
 * - images: `freshet` runs what deploy/Dockerfile says (ENTRYPOINT, WORKDIR = the repository
 *   root, ENV); `nats` runs the nats-server the testkit finds;
 * - names: each StatefulSet pod's `<pod>.<service>` resolves to its host.
 */

export const deployBase = join(repoRoot, 'deploy', 'k8s', 'base');

/** `ENTRYPOINT`, `ENV` of the Dockerfile's last stage (its WORKDIR is the repository root). */
export function dockerfileRuntime(file = join(repoRoot, 'deploy', 'Dockerfile')): ImageRuntime {
  const text = readFileSync(file, 'utf8').replace(/\\\n/g, ' ');
  const last = text.split(/^FROM /m).at(-1) ?? '';
  const env: Record<string, string> = {};
  let entrypoint: string[] = [];
  for (const line of last.split('\n')) {
    const m = /^(ENV|ENTRYPOINT)\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[1] === 'ENTRYPOINT') entrypoint = JSON.parse(m[2]!) as string[];
    else for (const [, k, v] of m[2]!.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=(\S+)/g)) env[k!] = v!;
  }
  if (entrypoint.length === 0) throw new Error(`${file}: no ENTRYPOINT in the last stage`);
  return { entrypoint, cwd: repoRoot, env };
}

/** The image runtimes the manifests use. */
export function imageRuntime(name: string): ImageRuntime | undefined {
  if (name === 'freshet') return dockerfileRuntime();
  if (name === 'nats') return { entrypoint: [findNatsServer()], cwd: repoRoot };
  return undefined;
}

/** The Freshet cluster config the init Job's ConfigMap carries (cluster, shards, model...). */
export interface ClusterFacts {
  cluster: string;
  shards: number;
  partitions: number;
  model: ModelConfigInput;
}

export function clusterFacts(m: K8sManifests): ClusterFacts {
  for (const [name, data] of m.configMaps) {
    for (const [key, text] of Object.entries(data)) {
      if (!/^cluster:/m.test(text) || !/^model:/m.test(text)) continue;
      // the loader `freshet init` uses, so the test reads the config as the Job does
      const c = parseClusterConfig(text, { source: `ConfigMap ${name}/${key}` });
      return {
        cluster: c.cluster,
        shards: c.shards.count,
        partitions: c.partitions,
        model: c.model as ModelConfigInput,
      };
    }
  }
  throw new Error(
    'no ConfigMap in deploy/k8s/base holds a cluster config (cluster + model): the init Job needs one',
  );
}

/** The NATS pods: StatefulSet pods running the nats image. */
export function natsPods(m: K8sManifests): K8sPod[] {
  return k8sPods(m).filter((p) => p.workload.containers.some((c) => c.image.startsWith('nats')));
}

/** The route port: the container port named `cluster` of the NATS pods. */
function routePort(pod: K8sPod): number {
  for (const c of pod.workload.containers) {
    const p = c.ports?.find((x) => x.name === 'cluster');
    if (p) return p.containerPort;
  }
  return 6222;
}

export interface AuthSecret {
  files: Record<string, string>;
  observer: { user: string; pass: string };
}

/**
 * The `nats-auth` Secret, made by `freshet config auth` as the production overlay says, with
 * the test's observer user added to the user list.
 */
export function makeAuthSecret(m: K8sManifests, facts: ClusterFacts, dir: string): AuthSecret {
  const routes = natsPods(m)
    .map((p) => `${k8sPodNames(m, p)[0] ?? p.name}:${routePort(p)}`)
    .join(',');
  const r = spawnSync(
    process.execPath,
    [
      'packages/cli/dist/main.js',
      'config',
      'auth',
      '--cluster',
      facts.cluster,
      '--out',
      dir,
      '--route-tls',
      '--routes',
      routes,
    ],
    { cwd: repoRoot, encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`freshet config auth failed: ${r.stderr}${r.stdout}`);
  const files: Record<string, string> = {};
  for (const f of readdirSync(dir)) files[f] = readFileSync(join(dir, f), 'utf8');
  const pass = randomBytes(18).toString('base64url');
  const auth = files['auth.conf'] ?? '';
  const end = auth.lastIndexOf('\n  ]\n}');
  if (end < 0) throw new Error(`auth.conf from config auth has an unexpected shape:\n${auth}`);
  files['auth.conf'] =
    `${auth.slice(0, end)},\n    # test only: the multi-host test's observer\n    { user: "observer", password: "${pass}" }` +
    auth.slice(end);
  return { files, observer: { user: 'observer', pass } };
}

/**
 * Which machine (Kubernetes node) each pod runs on. NATS pods on the NATS machines by
 * ordinal; the Freshet roles by their `app` label, the k-th pod of an app (by name) on
 * `roles[app][k]`; pods of apps not listed round-robin over the role machines. Every pod has its
 * own netns host (its own address, as a pod has), named after the pod; a machine is the group.
 */
export function placePods(
  m: K8sManifests,
  natsHosts: string[],
  roles: Record<string, string[]>,
  roleHosts: string[],
): Map<string, string> {
  const out = new Map<string, string>();
  const nats = natsPods(m);
  nats.forEach((p, i) => out.set(p.name, natsHosts[i % natsHosts.length]!));
  const byApp = new Map<string, K8sPod[]>();
  for (const p of k8sPods(m)) {
    if (out.has(p.name)) continue;
    const app = p.workload.labels.app ?? p.workload.name;
    byApp.set(app, [...(byApp.get(app) ?? []), p]);
  }
  let rr = 0;
  for (const [app, pods] of byApp) {
    pods.sort((a, b) => a.name.localeCompare(b.name));
    pods.forEach((p, k) => out.set(p.name, roles[app]?.[k] ?? roleHosts[rr++ % roleHosts.length]!));
  }
  return out;
}

/** A running pod: its containers' processes on its host. */
export interface RunningPod {
  pod: K8sPod;
  host: NetnsHost;
  launches: PodLaunch[];
  handles: ChildHandle[];
}

/**
 * Starts and restarts pods on their hosts, each time from the manifests (volumes written again
 * under the pod's root, which is kept, so data survives a restart like a PersistentVolume).
 */
export class PodRunner {
  readonly running = new Map<string, RunningPod>();

  constructor(
    private readonly m: K8sManifests,
    private readonly lab: NetnsLab,
    private readonly placement: Map<string, string>,
    private readonly secrets: Record<string, Record<string, string>>,
    private readonly root: string,
  ) {}

  pod(name: string): K8sPod {
    const p = k8sPods(this.m).find((x) => x.name === name);
    if (!p) throw new Error(`no pod ${name} in the manifests`);
    return p;
  }

  hostOf(pod: string): NetnsHost {
    if (!this.placement.has(pod)) throw new Error(`pod ${pod} is not placed`);
    return this.lab.host(pod);
  }

  /** Starts every container of the pod (init containers run to completion first). */
  async start(name: string): Promise<RunningPod> {
    const pod = this.pod(name);
    const host = this.hostOf(name);
    const launches = materializePod(pod, {
      root: join(this.root, name),
      namespace: this.m.namespace,
      hostIp: host.ip,
      hostName: host.name,
      secrets: this.secrets,
      configMaps: this.m.configMaps,
      image: imageRuntime,
    });
    mkdirSync(join(this.root, name), { recursive: true });
    const inits = launches.slice(0, pod.workload.initContainers.length);
    for (const l of inits) {
      const h = host.spawn(l.cmd, l.args, { cwd: l.cwd, env: l.env });
      const code = await h.exited;
      if (code !== 0)
        throw new Error(`${name}: init container ${l.container} exited ${code}: ${h.output().slice(-2000)}`);
    }
    const main = launches.slice(inits.length);
    const handles = main.map((l) => host.spawn(l.cmd, l.args, { cwd: l.cwd, env: l.env }));
    const rp = { pod, host, launches: main, handles };
    this.running.set(name, rp);
    this.history.push({ pod: name, handles });
    return rp;
  }

  /**
   * A Job's pod, retried like `restartPolicy: OnFailure` up to its backoffLimit: resolves with
   * the number of runs once one exits 0.
   */
  async runJob(name: string, backoffLimit = 6): Promise<{ runs: number; output: string }> {
    let last = '';
    for (let run = 1; run <= backoffLimit + 1; run++) {
      const rp = await this.start(name);
      const codes = await Promise.all(rp.handles.map((h) => h.exited));
      last = rp.handles.map((h) => h.output()).join('\n');
      if (codes.every((c) => c === 0)) return { runs: run, output: last };
      await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** (run - 1), 4000)));
    }
    throw new Error(`job ${name} failed ${backoffLimit + 1} times; last output:\n${last.slice(-3000)}`);
  }

  /** Waits until each container of the pod is ready: a role's ready line, NATS's "Server is ready". */
  async ready(name: string, timeoutMs = 60_000): Promise<void> {
    const rp = this.running.get(name);
    if (!rp) throw new Error(`pod ${name} not started`);
    // a container that exits fails the wait at once (waitFor would retry a throw until its deadline)
    const dead = () => rp.handles.find((h) => h.child.exitCode !== null || h.child.signalCode !== null);
    await waitFor(
      () =>
        !!dead() ||
        rp.handles.every(
          (h) => parseReadyLine(h.output()) !== undefined || h.output().includes('Server is ready'),
        ),
      { timeoutMs, intervalMs: 100, message: () => `${name} ready: ${this.tail(name)}` },
    );
    const d = dead();
    if (d)
      throw new Error(
        `${name} exited (${d.child.exitCode ?? d.child.signalCode}): ${d.output().slice(-3000)}`,
      );
  }

  /** Every container's output so far, one file per pod start (for FRESHET_MULTIHOST_LOGS). */
  private readonly history: Array<{ pod: string; handles: ChildHandle[] }> = [];

  dumpLogs(dir: string): void {
    mkdirSync(dir, { recursive: true });
    this.history.forEach((h, i) =>
      writeFileSync(join(dir, `${h.pod}.${i}.log`), h.handles.map((x) => x.output()).join('\n')),
    );
  }

  tail(name: string, chars = 1500): string {
    return (this.running.get(name)?.handles ?? []).map((h) => h.output().slice(-chars)).join('\n');
  }

  /** Every pod placed on a machine. */
  podsOn(machine: string): string[] {
    return [...this.placement].filter(([, h]) => h === machine).map(([p]) => p);
  }
}

/** A labelled event k: its item decides the label (items i0..i4 are liked), so a model can learn it. */
export const ITEMS = 20;
export const LIKED = 5;
export function eventShape(fields: string[]) {
  return {
    user: (k: number) => `u${k % 97}`,
    label: (k: number) => ((k * 7) % ITEMS < LIKED ? 1 : 0),
    features: (k: number, user: string) => {
      const f: Record<string, string> = {};
      for (const name of fields) {
        if (name === 'user') f[name] = user;
        else if (name === 'item') f[name] = `i${(k * 7) % ITEMS}`;
        else f[name] = `${name}${k % 3}`;
      }
      return f;
    },
    msgId: true,
  };
}
