import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { loadClusterConfig, parseClusterConfig } from '../src/cluster-config.js';
import { cliMainPath } from '../src/local-cluster.js';
import { subjects } from '@freshet/protocol';
import { natsRoles } from '../src/nats-auth.js';
import { roleSchemas, type RoleName } from '../src/role-schemas.js';

// Every Kubernetes manifest's command line and environment, checked against what the CLI really
// accepts: the subcommand and its flags (from `--help` of the built CLI), the role options (the
// role's own zod schema, as the process parses them) and the FRESHET_* variables entry points read.
const root = fileURLToPath(new URL('../../../', import.meta.url));
const k8s = join(root, 'deploy', 'k8s');

/** Environment variables Freshet entry points read (natsOptionsFromEnv, the logger, the local cluster). */
const knownEnv = new Set([
  'FRESHET_NATS_URL',
  'FRESHET_NATS_USER',
  'FRESHET_NATS_PASS',
  'FRESHET_NATS_PASS_FILE',
  'FRESHET_NATS_TOKEN',
  'FRESHET_NATS_CREDS',
  'FRESHET_NATS_NKEY_FILE',
  'FRESHET_NATS_INBOX_PREFIX',
  'FRESHET_NATS_CA',
  'FRESHET_LOG_LEVEL',
  'NODE_ENV',
  'POD_NAME',
]);
const roleOfCommand: Record<string, RoleName> = { shard: 'shard', worker: 'worker', serve: 'serving' };

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? yamlFiles(p) : /\.ya?ml$/.test(f) ? [p] : [];
  });
}

interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string }>;
  volumeMounts?: Array<{ mountPath: string }>;
}
interface Found {
  file: string;
  kind: string;
  name: string;
  container: Container;
}

function containers(): Found[] {
  const out: Found[] = [];
  for (const file of yamlFiles(k8s)) {
    for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
      const d = doc.toJS() as {
        kind?: string;
        metadata?: { name?: string };
        spec?: { template?: { spec?: { containers?: Container[] } } };
      } | null;
      const cs = d?.spec?.template?.spec?.containers;
      for (const c of cs ?? []) {
        out.push({
          file: relative(root, file),
          kind: d?.kind ?? '?',
          name: d?.metadata?.name ?? '?',
          container: c,
        });
      }
    }
  }
  return out;
}

const helpCache = new Map<string, Set<string>>();
function flagsOf(command: string): Set<string> {
  let flags = helpCache.get(command);
  if (!flags) {
    const help = execFileSync(process.execPath, [cliMainPath, command, '--help'], { encoding: 'utf8' });
    // An unknown subcommand falls back to the program's help: the manifest names no real command.
    expect(help, `\`freshet ${command}\` is a registered command`).toMatch(
      new RegExp(`^Usage: freshet ${command} `),
    );
    flags = new Set(help.match(/--[a-z][a-z-]*/g) ?? []);
    helpCache.set(command, flags);
  }
  return flags;
}

describe('deployment manifests', () => {
  const all = containers();
  const freshet = all.filter((f) => f.container.image === 'freshet');

  // the bootstrap Job runs `freshet init`; every other Freshet container is a role
  const roleContainers = freshet.filter((f) => f.container.args && f.container.args[0] !== 'init');

  it('find the role containers of the base and the init Job', () => {
    const commands = freshet.filter((f) => f.container.args).map((f) => f.container.args![0]);
    expect(new Set(commands)).toEqual(new Set(['shard', 'worker', 'serve', 'init']));
  });

  it('run real CLI commands with known flags and options that pass the role schemas', () => {
    const clusters = new Set<unknown>();
    const shardIds: number[] = [];
    const shardCounts = new Set<unknown>();
    for (const f of roleContainers) {
      const where = `${f.file} ${f.kind}/${f.name}`;
      const c = f.container;
      expect(c.command, where).toEqual(['node', 'packages/cli/dist/main.js']);
      expect(existsSync(join(root, c.command![1]!)), `${where}: CLI entry is built`).toBe(true);
      const [command, ...rest] = c.args!;
      const role = roleOfCommand[command!];
      expect(role, `${where}: ${command} is a role command`).toBeDefined();
      const flags = flagsOf(command!);
      for (const a of rest.filter((x) => x.startsWith('--')))
        expect(flags.has(a), `${where}: flag ${a}`).toBe(true);
      const json = rest[rest.indexOf('--options-json') + 1];
      expect(json, `${where}: --options-json`).toBeDefined();
      const options = JSON.parse(json!) as Record<string, unknown>;
      const r = roleSchemas[role!].schema.safeParse(options);
      expect(r.success ? '' : `${where}: ${r.error.message}`).toBe('');
      // Secrets and addresses travel by environment, never on the command line.
      expect(options.nats, `${where}: no nats in options`).toBeUndefined();
      expect(json).not.toMatch(/pass|token|secret/i);
      clusters.add(options.cluster);
      if (role === 'shard') shardIds.push(options.shard as number);
      if ('shards' in options) shardCounts.add(options.shards);
      // The NATS user is the nkey `freshet config auth` generates for this role, with its inbox.
      const env = new Map((c.env ?? []).map((e) => [e.name, e.value]));
      expect(env.get('FRESHET_NATS_INBOX_PREFIX'), where).toBe(
        subjects(String(options.cluster)).inboxPrefix(role!),
      );
      const seedFile = env.get('FRESHET_NATS_NKEY_FILE') ?? '';
      expect(seedFile, where).toMatch(new RegExp(`/${role}\\.nk$`));
      expect(
        (c.volumeMounts ?? []).some((m) => seedFile.startsWith(m.mountPath + '/')),
        `${where}: ${seedFile} is on a mounted volume`,
      ).toBe(true);
      expect(env.get('FRESHET_NATS_URL'), where).toMatch(/^nats:\/\//);
    }
    expect(clusters.size, 'one cluster name across manifests').toBe(1);
    expect(shardCounts.size, 'one shard count across manifests').toBe(1);
    const [n] = [...shardCounts] as number[];
    expect(shardIds.sort()).toEqual(Array.from({ length: n! }, (_, i) => i));
  });

  it('run `freshet init` in a Job, as the admin user, with a cluster config that agrees with the roles', () => {
    const jobs = freshet.filter((f) => f.container.args?.[0] === 'init');
    expect(jobs.map((f) => f.kind)).toEqual(['Job']);
    const job = jobs[0]!;
    const c = job.container;
    const where = `${job.file} Job/${job.name}`;
    expect(c.command, where).toEqual(['node', 'packages/cli/dist/main.js']);
    const [, ...rest] = c.args!;
    const flags = flagsOf('init');
    for (const a of rest.filter((x) => x.startsWith('--')))
      expect(flags.has(a), `${where}: flag ${a}`).toBe(true);
    const configPath = rest[rest.indexOf('--config') + 1]!;
    const mount = (c.volumeMounts ?? []).find((m) => m.mountPath === configPath) as
      { name: string; subPath?: string } | undefined;
    expect(mount, `${where}: ${configPath} is mounted`).toBeDefined();
    // the mounted ConfigMap, from the same file
    const docs = parseAllDocuments(readFileSync(join(root, job.file), 'utf8')).map(
      (d) =>
        d.toJS() as {
          kind: string;
          metadata: { name: string };
          data?: Record<string, string>;
          spec?: unknown;
        },
    );
    const jobSpec = docs.find((d) => d.kind === 'Job')?.spec as {
      template: {
        metadata: { labels: Record<string, string> };
        spec: { volumes: Array<{ name: string; configMap?: { name: string } }> };
      };
    };
    const volumes = jobSpec.template.spec.volumes;
    const cmName = volumes.find((v) => v.name === mount!.name)?.configMap?.name;
    const cm = docs.find((d) => d.kind === 'ConfigMap' && d.metadata.name === cmName);
    const text = cm?.data?.[mount!.subPath ?? ''];
    expect(text, `${where}: ConfigMap ${cmName} holds ${mount!.subPath}`).toBeDefined();
    const cfg = parseClusterConfig(text!, { source: `${job.file} ConfigMap/${cmName}` });
    expect(cfg.nats.embedded).toBe(0);

    // what the roles run with must be what init prepares
    const optionsOf = (command: string) =>
      roleContainers
        .filter((f) => f.container.args![0] === command)
        .map((f) => {
          const a = f.container.args!;
          return JSON.parse(a[a.indexOf('--options-json') + 1]!) as Record<string, unknown>;
        });
    const shards = optionsOf('shard');
    for (const o of [...shards, ...optionsOf('worker'), ...optionsOf('serve')]) {
      expect(o.cluster).toBe(cfg.cluster);
      expect(o.shards).toBe(cfg.shards.count);
    }
    for (const o of optionsOf('worker')) {
      expect(o.partitions).toBe(cfg.partitions);
      expect(o.model).toEqual(cfg.model);
    }
    for (const o of optionsOf('serve')) expect(o.model).toEqual(cfg.model);
    // shards take the model spec init stores, so there is one source of it
    for (const o of shards) expect(o.model).toBeUndefined();
    expect(shards.length).toBe(cfg.shards.count);

    const env = new Map((c.env ?? []).map((e) => [e.name, e.value]));
    expect(env.get('FRESHET_NATS_INBOX_PREFIX'), where).toBe(subjects(cfg.cluster).inboxPrefix('admin'));
    const seedFile = env.get('FRESHET_NATS_NKEY_FILE') ?? '';
    expect(seedFile, where).toMatch(/\/admin\.nk$/);
    expect(
      (c.volumeMounts ?? []).some((m) => seedFile.startsWith(m.mountPath + '/')),
      `${where}: ${seedFile} is on a mounted volume`,
    ).toBe(true);
    // its pod may reach NATS (network-policies.yaml lets labelled clients in)
    expect(jobSpec.template.metadata.labels['freshet.io/nats-client']).toBe('true');
    const kust = readFileSync(join(k8s, 'base', 'kustomization.yaml'), 'utf8');
    expect(kust).toContain(relative(join(k8s, 'base'), join(root, job.file)));
  });

  it('set only environment variables Freshet reads (base and overlay patches)', () => {
    for (const f of all) {
      for (const e of f.container.env ?? []) {
        expect(knownEnv.has(e.name), `${f.file} ${f.name}: env ${e.name}`).toBe(true);
      }
    }
  });

  it('mount every role seed the overlay secret provides, from files generated by `config auth`', () => {
    const k = readFileSync(join(k8s, 'overlays', 'production', 'kustomization.yaml'), 'utf8');
    for (const role of natsRoles) expect(k).toContain(`secrets/${role}.nk`);
    expect(k).toContain('secrets/auth.conf');
    expect(k).toContain('secrets/cluster.conf');
    // route TLS: the certificate the servers present and the CA they check; never the CA's key
    for (const f of ['route.pem', 'route.key', 'route-ca.pem']) expect(k).toContain(`secrets/${f}`);
    expect(k).not.toContain('secrets/route-ca.key');
    const nats = readFileSync(join(k8s, 'base', 'nats.yaml'), 'utf8');
    for (const f of ['route.pem', 'route.key', 'route-ca.pem'])
      expect(nats).toContain(`{ key: ${f}, path: ${f} }`);
    expect(nats).toContain('--route-tls');
  });

  it('close NATS to strangers: route secret, loopback monitor, network policies', () => {
    const nats = readFileSync(join(k8s, 'base', 'nats.yaml'), 'utf8');
    expect(nats).toMatch(/^\s+http: 127\.0\.0\.1:8222$/m);
    expect(nats).toMatch(/cluster \{[^}]*include \.\/auth\/cluster\.conf\s*\}/);
    expect(nats).not.toMatch(/routes:/);
    const docs = parseAllDocuments(readFileSync(join(k8s, 'base', 'network-policies.yaml'), 'utf8')).map(
      (d) => d.toJS() as { kind: string; metadata: { name: string }; spec: Record<string, unknown> },
    );
    expect(docs.every((d) => d.kind === 'NetworkPolicy')).toBe(true);
    const deny = docs.find((d) => d.metadata.name === 'default-deny');
    expect(deny?.spec).toEqual({ podSelector: {}, policyTypes: ['Ingress'] });
    // the route port is open to the NATS pods only
    const natsIn = docs.find((d) => d.metadata.name === 'nats-clients')?.spec.ingress as Array<{
      from: unknown[];
      ports: Array<{ port: number }>;
    }>;
    const route = natsIn.find((r) => r.ports.some((p) => p.port === 6222));
    expect(route?.from).toEqual([{ podSelector: { matchLabels: { app: 'nats' } } }]);
    expect(natsIn.flatMap((r) => r.ports.map((p) => p.port)).sort()).toEqual([4222, 6222]);
    const kust = readFileSync(join(k8s, 'base', 'kustomization.yaml'), 'utf8');
    expect(kust).toContain('network-policies.yaml');
  });

  it('deploy/local.yaml is a valid cluster config with a replicated 3-node NATS', async () => {
    const c = await loadClusterConfig(join(root, 'deploy', 'local.yaml'));
    expect(c.nats).toMatchObject({ embedded: 3, replicas: 3, persist: true });
    expect(c.metrics.host).toBe('127.0.0.1');
  });

  it('the Dockerfile runs the same CLI entry', () => {
    const d = readFileSync(join(root, 'deploy', 'Dockerfile'), 'utf8');
    expect(d).toMatch(/ENTRYPOINT \["node", "packages\/cli\/dist\/main\.js"\]/);
  });
});
