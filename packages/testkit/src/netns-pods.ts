import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { FreshetError } from '@freshet/protocol';

/**
 * Kubernetes workloads run as plain processes on netns hosts (./netns.ts): the manifests are
 * read as they are (a kustomization's `resources`, followed recursively), every Deployment,
 * StatefulSet, Job and DaemonSet becomes pods, and each pod's containers start with their own
 * command, args and env. What a kubelet would provide is provided the same way:
 *
 * - volumes: each pod has a root directory; every volumeMount's `mountPath` is made under it
 *   (ConfigMap and Secret volumes written there, `items`/`subPath` honoured; claim templates,
 *   claims and emptyDirs are plain directories that survive the pod's restarts).
 *   Absolute paths that fall under a mount point are prefixed with the pod root wherever a
 *   process would read them: args, env values, and the text of ConfigMap/Secret files (so
 *   `include ./auth/x.conf` beside `/etc/nats/nats.conf` still resolves, and `/data` is the pod's).
 * - env: `value` as written; `valueFrom.fieldRef` (metadata.name/namespace, status.podIP,
 *   spec.nodeName), `secretKeyRef`, `configMapKeyRef` resolved; `HOSTNAME` = the pod name. Nothing
 *   of the test process's environment leaks in except `PATH` (and the image's own env).
 * - images: the caller maps each image to an entrypoint, working directory and env (what the
 *   Dockerfile says); a container's `command` replaces the entrypoint, as in Kubernetes.
 * - names: a StatefulSet pod answers to `<pod>.<serviceName>` (and the namespace's FQDN).
 *
 * Anything that cannot be mapped (an unknown valueFrom, a missing Secret key, a volume kind
 * not listed) is a CONFIG error that names the manifest: a manifest that cannot start as written.
 */

export interface K8sEnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    fieldRef?: { fieldPath: string };
    secretKeyRef?: { name: string; key: string };
    configMapKeyRef?: { name: string; key: string };
    [other: string]: unknown;
  };
}

export interface K8sVolumeMount {
  name: string;
  mountPath: string;
  subPath?: string;
}

export interface K8sContainer {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: K8sEnvVar[];
  volumeMounts?: K8sVolumeMount[];
  ports?: Array<{ containerPort: number; name?: string }>;
}

interface KeyItems {
  items?: Array<{ key: string; path: string }>;
}

export interface K8sVolume {
  name: string;
  configMap?: { name: string } & KeyItems;
  secret?: { secretName: string } & KeyItems;
  emptyDir?: unknown;
  persistentVolumeClaim?: { claimName: string };
  [other: string]: unknown;
}

export interface K8sWorkload {
  kind: 'Deployment' | 'StatefulSet' | 'Job' | 'DaemonSet';
  name: string;
  /** Where it was read from (for error messages). */
  source: string;
  replicas: number;
  serviceName?: string;
  labels: Record<string, string>;
  containers: K8sContainer[];
  initContainers: K8sContainer[];
  volumes: K8sVolume[];
  /** volumeClaimTemplates' names: one persistent directory per pod each. */
  claims: string[];
}

export interface K8sManifests {
  namespace: string;
  workloads: K8sWorkload[];
  configMaps: Map<string, Record<string, string>>;
  /** Every document, for checks of kinds this module does not run (Services, policies). */
  documents: Array<Record<string, unknown>>;
}

const WORKLOADS = new Set(['Deployment', 'StatefulSet', 'Job', 'DaemonSet']);

type Doc = Record<string, unknown> & {
  kind?: string;
  metadata?: { name?: string; namespace?: string };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
};

/**
 * Reads the manifests a kustomization lists (`resources`: files, or directories holding a
 * kustomization.yaml), with the kustomization's `namespace`. Patches and generators of
 * overlays are not applied: point it at a base.
 */
export function readK8sManifests(kustomizationDir: string): K8sManifests {
  const out: K8sManifests = { namespace: 'default', workloads: [], configMaps: new Map(), documents: [] };
  const visit = (dir: string, top: boolean) => {
    const kf = ['kustomization.yaml', 'kustomization.yml', 'Kustomization']
      .map((f) => join(dir, f))
      .find((f) => existsSync(f));
    if (!kf) throw new FreshetError('CONFIG', `no kustomization.yaml in ${dir}`);
    const k = parseOne(kf) as { namespace?: string; resources?: string[] };
    if (top && k.namespace) out.namespace = k.namespace;
    for (const r of k.resources ?? []) {
      const p = resolve(dir, r);
      if (existsSync(p) && statSync(p).isDirectory()) visit(p, false);
      else for (const d of parseAll(p)) add(d, p);
    }
  };
  const add = (d: Doc, source: string) => {
    out.documents.push(d);
    const name = d.metadata?.name ?? '';
    if (d.kind === 'ConfigMap') out.configMaps.set(name, { ...(d.data ?? {}) });
    if (!d.kind || !WORKLOADS.has(d.kind)) return;
    const spec = d.spec ?? {};
    const template = (spec.template ?? {}) as {
      metadata?: { labels?: Record<string, string> };
      spec?: { containers?: K8sContainer[]; initContainers?: K8sContainer[]; volumes?: K8sVolume[] };
    };
    const claims = ((spec.volumeClaimTemplates ?? []) as Array<{ metadata?: { name?: string } }>).map(
      (c) => c.metadata?.name ?? '',
    );
    out.workloads.push({
      kind: d.kind as K8sWorkload['kind'],
      name,
      source,
      replicas: d.kind === 'Job' || d.kind === 'DaemonSet' ? 1 : Number(spec.replicas ?? 1),
      ...(typeof spec.serviceName === 'string' ? { serviceName: spec.serviceName } : {}),
      labels: { ...(template.metadata?.labels ?? {}) },
      containers: template.spec?.containers ?? [],
      initContainers: template.spec?.initContainers ?? [],
      volumes: template.spec?.volumes ?? [],
      claims,
    });
  };
  visit(resolve(kustomizationDir), true);
  return out;
}

function parseAll(file: string): Doc[] {
  return parseAllDocuments(readFileSync(file, 'utf8'))
    .map((d) => {
      if (d.errors.length) throw new FreshetError('CONFIG', `${file}: ${d.errors[0]!.message}`);
      return d.toJS() as Doc | null;
    })
    .filter((d): d is Doc => !!d);
}

function parseOne(file: string): Doc {
  return parseAll(file)[0] ?? {};
}

/** One pod of a workload: StatefulSet `<name>-<i>`, Deployment `<name>-<i>`, Job `<name>`. */
export interface K8sPod {
  name: string;
  ordinal: number;
  workload: K8sWorkload;
}

export function k8sPods(m: K8sManifests): K8sPod[] {
  return m.workloads.flatMap((w) =>
    w.kind === 'Job' || w.kind === 'DaemonSet'
      ? [{ name: w.name, ordinal: 0, workload: w }]
      : Array.from({ length: w.replicas }, (_, i) => ({ name: `${w.name}-${i}`, ordinal: i, workload: w })),
  );
}

/** The DNS names a pod answers to inside the cluster (StatefulSet pods under their service). */
export function k8sPodNames(m: K8sManifests, pod: K8sPod): string[] {
  const svc = pod.workload.serviceName;
  if (pod.workload.kind !== 'StatefulSet' || !svc) return [];
  return [`${pod.name}.${svc}`, `${pod.name}.${svc}.${m.namespace}.svc.cluster.local`];
}

/** What an image runs and with what: its ENTRYPOINT, WORKDIR and ENV. */
export interface ImageRuntime {
  entrypoint: string[];
  cwd: string;
  env?: Record<string, string>;
}

export interface PodLaunch {
  container: string;
  cmd: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
}

export interface MaterializeOptions {
  /** The pod's root directory: mounts are made under it; keep it to keep its volumes. */
  root: string;
  namespace: string;
  /** The address of the host the pod runs on (status.podIP) and the host's name (spec.nodeName). */
  hostIp: string;
  hostName: string;
  /** Secrets by name: key → file content. */
  secrets: Record<string, Record<string, string>>;
  configMaps: Map<string, Record<string, string>>;
  /** The runtime of an image (its name without tag), or undefined for an unknown image. */
  image(name: string): ImageRuntime | undefined;
}

/**
 * Writes a pod's volumes under `o.root` and returns how each of its containers starts (init
 * containers first, in order, then the containers).
 */
export function materializePod(pod: K8sPod, o: MaterializeOptions): PodLaunch[] {
  const w = pod.workload;
  const where = `${w.kind} ${w.name} (${w.source})`;
  const mounts = new Set<string>();
  const all = [...w.initContainers, ...w.containers];
  for (const c of all) for (const vm of c.volumeMounts ?? []) mounts.add(vm.mountPath);
  // longest first, so /etc/nats/auth wins over /etc/nats
  const mountList = [...mounts].sort((a, b) => b.length - a.length);
  const rewrite = (text: string) => rewriteMountPaths(text, mountList, o.root);

  const volumeFiles = (v: K8sVolume): Record<string, string> | 'dir' => {
    const pick = (data: Record<string, string>, items: KeyItems['items'], what: string) => {
      if (!items) return data;
      const out: Record<string, string> = {};
      for (const it of items) {
        const val = data[it.key];
        if (val === undefined) throw new FreshetError('CONFIG', `${where}: ${what} has no key ${it.key}`);
        out[it.path] = val;
      }
      return out;
    };
    if (v.configMap) {
      const data = o.configMaps.get(v.configMap.name);
      if (!data)
        throw new FreshetError('CONFIG', `${where}: ConfigMap ${v.configMap.name} is not in the manifests`);
      return pick(data, v.configMap.items, `ConfigMap ${v.configMap.name}`);
    }
    if (v.secret) {
      const data = o.secrets[v.secret.secretName];
      if (!data) throw new FreshetError('CONFIG', `${where}: Secret ${v.secret.secretName} was not provided`);
      return pick(data, v.secret.items, `Secret ${v.secret.secretName}`);
    }
    if ('emptyDir' in v || v.persistentVolumeClaim) return 'dir';
    throw new FreshetError('CONFIG', `${where}: volume ${v.name} is of a kind this harness cannot make`);
  };

  for (const c of all) {
    for (const vm of c.volumeMounts ?? []) {
      const target = join(o.root, vm.mountPath);
      const v = w.volumes.find((x) => x.name === vm.name);
      if (!v) {
        if (!w.claims.includes(vm.name)) {
          throw new FreshetError('CONFIG', `${where}: container ${c.name} mounts unknown volume ${vm.name}`);
        }
        mkdirSync(target, { recursive: true });
        continue;
      }
      const files = volumeFiles(v);
      if (files === 'dir') {
        // kept with the pod root: it outlives the pod's restarts, like a PersistentVolume
        mkdirSync(target, { recursive: true });
        continue;
      }
      if (vm.subPath !== undefined) {
        const content = files[vm.subPath];
        if (content === undefined) {
          throw new FreshetError('CONFIG', `${where}: volume ${vm.name} has no ${vm.subPath} for subPath`);
        }
        mkdirSync(dirname(target), { recursive: true });
        writeFileSync(target, rewrite(content), { mode: 0o600 });
        continue;
      }
      mkdirSync(target, { recursive: true, mode: 0o700 });
      for (const [path, content] of Object.entries(files)) {
        mkdirSync(dirname(join(target, path)), { recursive: true });
        writeFileSync(join(target, path), rewrite(content), { mode: 0o600 });
      }
    }
  }

  return all.map((c) => {
    const img = o.image(c.image.replace(/[:@].*$/, ''));
    if (!img) throw new FreshetError('CONFIG', `${where}: no runtime for image ${c.image}`);
    const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...(img.env ?? {}) };
    env.HOSTNAME = pod.name;
    for (const e of c.env ?? []) env[e.name] = rewrite(envValue(e, pod, o, where));
    const command = c.command ?? img.entrypoint;
    const argv = [...command, ...(c.args ?? [])].map(rewrite);
    // $(VAR) in command and args expands from the container's env, as the kubelet does
    const expanded = argv.map((a) =>
      a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => env[v] ?? m),
    );
    if (expanded.length === 0)
      throw new FreshetError('CONFIG', `${where}: container ${c.name} has no command`);
    return { container: c.name, cmd: expanded[0]!, args: expanded.slice(1), env, cwd: img.cwd };
  });
}

function envValue(e: K8sEnvVar, pod: K8sPod, o: MaterializeOptions, where: string): string {
  if (e.value !== undefined) return String(e.value);
  const f = e.valueFrom;
  if (!f) return '';
  if (f.fieldRef) {
    const byPath: Record<string, string> = {
      'metadata.name': pod.name,
      'metadata.namespace': o.namespace,
      'status.podIP': o.hostIp,
      'status.hostIP': o.hostIp,
      'spec.nodeName': o.hostName,
    };
    const v = byPath[f.fieldRef.fieldPath];
    if (v === undefined)
      throw new FreshetError(
        'CONFIG',
        `${where}: env ${e.name}: fieldRef ${f.fieldRef.fieldPath} unsupported`,
      );
    return v;
  }
  if (f.secretKeyRef) {
    const v = o.secrets[f.secretKeyRef.name]?.[f.secretKeyRef.key];
    if (v === undefined) {
      throw new FreshetError(
        'CONFIG',
        `${where}: env ${e.name}: Secret ${f.secretKeyRef.name} has no ${f.secretKeyRef.key}`,
      );
    }
    return v;
  }
  if (f.configMapKeyRef) {
    const v = o.configMaps.get(f.configMapKeyRef.name)?.[f.configMapKeyRef.key];
    if (v === undefined) {
      throw new FreshetError(
        'CONFIG',
        `${where}: env ${e.name}: ConfigMap ${f.configMapKeyRef.name} has no ${f.configMapKeyRef.key}`,
      );
    }
    return v;
  }
  throw new FreshetError(
    'CONFIG',
    `${where}: env ${e.name}: valueFrom ${Object.keys(f).join(',')} unsupported`,
  );
}

/**
 * Prefixes every absolute path that is a mount point or under one with `root`. A path starts
 * after a delimiter (start, space, quote, `=`, `:`, `,`, `(`, `[`, `{`), so URLs
 * (`nats://nats-0.nats`) and relative paths are left alone.
 */
export function rewriteMountPaths(text: string, mounts: string[], root: string): string {
  if (mounts.length === 0) return text;
  const esc = mounts.map((m) => m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const re = new RegExp(`(^|[\\s"'=:,(\\[{])(${esc.join('|')})(?=$|[/\\s"',;)\\]}])`, 'gm');
  return text.replace(re, (_m, pre: string, path: string) => `${pre}${join(root, path)}`);
}
