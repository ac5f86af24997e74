import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { z } from 'zod';
import { streamOptionsSchema } from '@freshet/client';
import { modelConfigSchema } from '@freshet/model';
import { natsOptionsSchema } from '@freshet/nats';
import { assertClusterName, FreshetError } from '@freshet/protocol';
import { compileShardHostOptions, type ShardHostOptionsInput } from '@freshet/shard';
import { roleSchemas, shardHostOptions, type RoleName } from './role-schemas.js';

/**
 * The cluster config format (YAML): one file names the NATS servers, the model, and the count and
 * options of shards, workers and serving nodes. Role options are validated by the SAME zod
 * schemas the role processes parse their `--options-json` with, so a config that passes here starts.
 */

const byteSize = z.union([
  z.number().int().positive(),
  z
    .string()
    .regex(/^\d+(\.\d+)?\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/i)
    .transform((s) => {
      const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(s.trim());
      const n = Number(m?.[1] ?? 0);
      const unit = (m?.[2] ?? 'B').toLowerCase();
      const mult: Record<string, number> = {
        '': 1,
        b: 1,
        kib: 1024,
        mib: 1024 ** 2,
        gib: 1024 ** 3,
        kb: 1e3,
        mb: 1e6,
        gb: 1e9,
      };
      return Math.round(n * (mult[unit] ?? 1));
    }),
]);

/** Secrets never live in the config: only paths to files or names of environment variables. */
const natsAuthSchema = z
  .object({
    /**
     * Embedded servers only: generate one user per role with least-privilege permissions (see
     * nats-auth.ts); nkey seeds are written to `<dataDir>/nats-auth/<role>.nk` (mode 0600).
     */
    generate: z.boolean().default(false),
    user: z.string().optional(),
    /** File holding the password. */
    passFile: z.string().optional(),
    /** Environment variable holding the password (read by the process that connects). */
    passEnv: z.string().optional(),
    tokenEnv: z.string().optional(),
    /** A NATS .creds file (JWT + nkey seed). */
    credsFile: z.string().optional(),
    tls: natsOptionsSchema.shape.tls,
  })
  .strict()
  .prefault({});

/** Whether a bind address keeps traffic on this machine. */
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

export const natsConfigSchema = z
  .object({
    /** Embedded nats-server processes started by `freshet up` (1, or 3 for a replicated cluster). */
    embedded: z.union([z.literal(0), z.literal(1), z.literal(3)]).default(1),
    /** External servers (then `embedded` must be 0). */
    urls: z.array(z.string().url()).default([]),
    /** JetStream replicas for the feedback stream and KV (≤ servers). */
    replicas: z.number().int().min(1).max(5).optional(),
    /** Server max_payload for embedded servers. */
    maxPayload: byteSize.default(8 * 1024 * 1024),
    /** Host embedded servers bind to; loopback unless exposed on purpose. */
    host: z.string().default('127.0.0.1'),
    /**
     * Keep the embedded servers' JetStream store (feedback stream, consumers, KV: leases,
     * manifests, encoder statistics) in `<dataDir>/nats/<i>`, so a restarted `freshet up` goes on
     * where it stopped, as the shards do from their checkpoints. Off: a temporary store.
     */
    persist: z.boolean().default(false),
    auth: natsAuthSchema,
    /**
     * TLS for embedded servers: the server's certificate and key, and the CA clients verify it
     * with (passed to every role and admin connection).
     */
    tls: z
      .object({
        certFile: z.string(),
        keyFile: z.string(),
        caFile: z.string(),
        verifyClients: z.boolean().default(false),
      })
      .strict()
      .optional(),
    /**
     * Mutual TLS on the routes of an embedded 3-node cluster, next to the route secret: a CA and
     * a route certificate made with openssl in `<dataDir>/nats-route-tls` at each start. Default:
     * on when the servers bind beyond loopback (route traffic then crosses a network), off on
     * loopback.
     */
    routeTls: z.boolean().optional(),
  })
  .strict()
  .superRefine((n, ctx) => {
    if (n.tls && n.embedded === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['tls'],
        message: 'nats.tls configures embedded servers; for external NATS set nats.auth.tls.caFile',
      });
    }
    if (n.embedded === 0 && n.urls.length === 0) {
      ctx.addIssue({ code: 'custom', message: 'nats: set `embedded: 1|3` or list external `urls`' });
    }
    if (n.embedded > 0 && n.urls.length > 0) {
      ctx.addIssue({ code: 'custom', message: 'nats: `embedded` and `urls` are exclusive; set embedded: 0' });
    }
    if (n.persist && n.embedded === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['persist'],
        message: 'nats.persist keeps the store of embedded servers; external servers keep their own',
      });
    }
    if (n.auth.generate && n.embedded === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['auth', 'generate'],
        message:
          'generated auth configures embedded servers only; for external NATS run `freshet config auth`',
      });
    }
    if (n.auth.generate && (n.auth.user || n.auth.passFile || n.auth.passEnv || n.auth.credsFile)) {
      ctx.addIssue({
        code: 'custom',
        path: ['auth'],
        message: '`generate` excludes user/passFile/passEnv/credsFile',
      });
    }
    if (n.routeTls && n.embedded !== 3) {
      ctx.addIssue({
        code: 'custom',
        path: ['routeTls'],
        message: 'nats.routeTls secures the routes of an embedded 3-node cluster (embedded: 3)',
      });
    }
    const servers = n.embedded || n.urls.length;
    if (n.replicas !== undefined && n.replicas > servers && n.embedded > 0) {
      ctx.addIssue({
        code: 'custom',
        message: `nats.replicas ${n.replicas} > ${servers} embedded server(s)`,
      });
    }
  })
  .transform((n) => ({
    ...n,
    replicas: n.replicas ?? (n.embedded === 3 ? 3 : 1),
    routeTls: n.routeTls ?? (n.embedded === 3 && !isLoopback(n.host)),
  }));
export type NatsConfig = z.infer<typeof natsConfigSchema>;

const roleGroupSchema = (defaultCount: number) =>
  z
    .object({
      count: z.number().int().min(0).max(256).default(defaultCount),
      /** Role options shared by every instance (validated by the role's own schema). */
      options: z.record(z.string(), z.unknown()).default({}),
    })
    .strict()
    .prefault({});

/**
 * Serving nodes, optionally sliced (packages/serving/README.md "Sliced serving"): with `slices: n`
 * node i holds slice i mod n, so every slice needs a node (two for a slice to survive one).
 */
const servingGroupSchema = z
  .object({
    count: z.number().int().min(0).max(256).default(1),
    options: z.record(z.string(), z.unknown()).default({}),
    slices: z.number().int().min(1).max(256).optional(),
  })
  .strict()
  .refine((g) => g.slices === undefined || g.slices <= g.count, {
    message: 'more slices than serving nodes: every slice needs a node that holds it',
    path: ['slices'],
  })
  .prefault({});

/**
 * Shards, and optionally the shard hosts that run them (docs/resharding.md): with `hosts` the
 * cluster runs shard hosts instead of one process per shard, and the shards can be moved
 * between them while it runs (`freshet shard place`). A number H names them `h0`… `h<H-1>` (the
 * local cluster starts them); a list names them as they are elsewhere (a StatefulSet's pods).
 */
const shardGroupSchema = z
  .object({
    count: z.number().int().min(0).max(256).default(2),
    options: z.record(z.string(), z.unknown()).default({}),
    hosts: z
      .union([
        z.number().int().min(1).max(256),
        z
          .array(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a host name is 1-64 letters, digits, - or _'))
          .min(1)
          .refine((h) => new Set(h).size === h.length, 'a host is named twice'),
      ])
      .optional(),
    /** Shard threads per shard host (its option `threads`; 0: its shards share its own thread). */
    threads: z.number().int().min(0).max(256).optional(),
  })
  .strict()
  .refine((g) => g.hosts === undefined || shardHostNames(g.hosts).length <= g.count, {
    message: 'more shard hosts than shards: a host runs whole shards',
    path: ['hosts'],
  })
  .refine((g) => g.threads === undefined || g.hosts !== undefined, {
    message: 'threads are a shard host option: set hosts too',
    path: ['threads'],
  })
  .prefault({});

/** The names of a config's shard hosts: `h0`… for a count, else the names given. */
export function shardHostNames(hosts: number | string[]): string[] {
  return typeof hosts === 'number' ? Array.from({ length: hosts }, (_, i) => `h${i}`) : hosts;
}

export const metricsConfigSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Loopback unless exposed on purpose. */
    host: z.string().default('127.0.0.1'),
    /** First port; actor i gets basePort + i. 0 = each picks a free port. */
    basePort: z.number().int().min(0).max(65535).default(0),
  })
  .strict()
  .prefault({});

/**
 * The model of the default local cluster, for impression/click/rating streams: a factorization
 * machine on user × item × category (the fields every event carries or the synthetic world
 * publishes), so each user's and each item's embedding interact (⟨v_user, v_item⟩) and users
 * with opposite tastes get opposite rankings; plus a weight per feature value (popularity,
 * position bias). Adam at 0.01 with table bias correction: on the drift bench it keeps pace
 * with a PyTorch FM at the same setting; a wide&deep here (concatenated embeddings into an MLP)
 * reached 0.68 AUC where this reaches 0.89, and did not rank users with opposite tastes apart.
 */
export const defaultModel: Record<string, unknown> = {
  name: 'local',
  kind: 'fm',
  features: {
    fields: [
      { kind: 'categorical', name: 'user' },
      { kind: 'categorical', name: 'item', tower: 'item' },
      { kind: 'categorical', name: 'category', tower: 'item' },
    ],
  },
  embeddingDim: 8,
  optimizer: { kind: 'adam', lr: 0.01 },
};

export const clusterConfigSchema = z
  .object({
    cluster: z.string().default('local'),
    /** Checkpoints and logs; relative paths are relative to the config file. */
    dataDir: z.string().default('.freshet/data'),
    nats: natsConfigSchema.prefault({}),
    /** Feedback stream partitions (fixed for the life of a stream). */
    partitions: z.number().int().min(1).max(4096).default(8),
    /** Model config for @freshet/model (kind, feature fields, sizes); the default is {@link defaultModel}. */
    model: z
      .record(z.string(), z.unknown())
      .default(defaultModel)
      .superRefine((m, ctx) => {
        const r = modelConfigSchema.safeParse(m);
        if (!r.success)
          for (const i of r.error.issues) ctx.addIssue({ ...i, code: 'custom', message: i.message });
      }),
    /** Feedback stream limits (storage, retention); partitions and replicas come from above. */
    stream: streamOptionsSchema
      .omit({ cluster: true, partitions: true, replicas: true })
      .strict()
      .prefault({}),
    shards: shardGroupSchema,
    workers: roleGroupSchema(1),
    serving: servingGroupSchema,
    metrics: metricsConfigSchema,
  })
  .strict();
export type ClusterConfigInput = z.input<typeof clusterConfigSchema>;

/** One process of the cluster: its role, id and the options it is started with. */
export interface ActorPlan {
  role: RoleName;
  /** Stable id within the role (`shard-0`, `worker-1`...). */
  id: string;
  index: number;
  /** Options as the role process receives them (`--options-json`), validated by its schema. */
  options: Record<string, unknown>;
  /** The `freshet` command that runs it when not the role's own (`shard-host`). */
  command?: string;
}

/** A validated cluster config: defaults applied, paths resolved, every actor planned. */
export interface ClusterConfig {
  cluster: string;
  dataDir: string;
  nats: NatsConfig;
  partitions: number;
  model: Record<string, unknown>;
  stream: Record<string, unknown>;
  shards: {
    count: number;
    options: Record<string, unknown>;
    hosts?: number | string[] | undefined;
    threads?: number | undefined;
  };
  workers: { count: number; options: Record<string, unknown> };
  serving: { count: number; options: Record<string, unknown>; slices?: number | undefined };
  metrics: z.infer<typeof metricsConfigSchema>;
  /** Where the config came from (for messages). */
  source: string;
}

function formatZodError(err: z.ZodError, source: string): string {
  const lines = err.issues.map((i) => `  - ${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`);
  return `invalid cluster config ${source}:\n${lines.join('\n')}`;
}

/** Validates a parsed config object. Relative `dataDir` resolves against `baseDir`. */
export function compileClusterConfig(
  input: unknown,
  opts: { source?: string; baseDir?: string } = {},
): ClusterConfig {
  const source = opts.source ?? '(inline)';
  const parsed = clusterConfigSchema.safeParse(input ?? {});
  if (!parsed.success) throw new FreshetError('CONFIG', formatZodError(parsed.error, source));
  const c = parsed.data;
  try {
    assertClusterName(c.cluster);
  } catch (e) {
    throw new FreshetError('CONFIG', `${source}: ${(e as Error).message}`);
  }
  const dataDir = isAbsolute(c.dataDir) ? c.dataDir : resolve(opts.baseDir ?? process.cwd(), c.dataDir);
  const cfg: ClusterConfig = { ...c, dataDir, source };
  // Validate every actor's options now (with a placeholder URL for embedded servers), so a bad
  // option fails before any process starts, with the path of the offending field.
  const urls = cfg.nats.urls.length ? cfg.nats.urls : ['nats://127.0.0.1:4222'];
  for (const a of planActors(cfg, urls)) void a;
  return cfg;
}

/** Reads and validates a YAML cluster config file. */
export async function loadClusterConfig(file: string): Promise<ClusterConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new FreshetError(
      'CONFIG',
      `cannot read cluster config ${file}: ${(e as Error).message}. Pass an existing file with --config, ` +
        'or omit it for the default local cluster.',
    );
  }
  return parseClusterConfig(text, { source: file, baseDir: dirname(resolve(file)) });
}

/** Parses YAML text into a validated config. */
export function parseClusterConfig(
  text: string,
  opts: { source?: string; baseDir?: string } = {},
): ClusterConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new FreshetError(
      'CONFIG',
      `${opts.source ?? 'cluster config'} is not valid YAML: ${(e as Error).message}`,
    );
  }
  return compileClusterConfig(doc, opts);
}

/** The default local cluster: one embedded nats-server, two shards, one worker, one serving node. */
export function defaultClusterConfig(overrides: Partial<ClusterConfigInput> = {}): ClusterConfig {
  return compileClusterConfig(overrides, { source: '(defaults)' });
}

/** NATS connection options (secrets resolved from files/env here, in the caller's process). */
export function natsConnectionOptions(
  cfg: ClusterConfig,
  urls: string[],
  env: NodeJS.ProcessEnv = process.env,
): z.input<typeof natsOptionsSchema> {
  const a = cfg.nats.auth;
  const o: z.input<typeof natsOptionsSchema> = { servers: urls };
  if (a.user) o.user = a.user;
  if (a.passEnv) {
    const v = env[a.passEnv];
    if (v === undefined) {
      throw new FreshetError(
        'CONFIG',
        `nats.auth.passEnv names ${a.passEnv}, which is not set in the environment`,
      );
    }
    o.pass = v;
  }
  if (a.tokenEnv) {
    const v = env[a.tokenEnv];
    if (v === undefined) {
      throw new FreshetError(
        'CONFIG',
        `nats.auth.tokenEnv names ${a.tokenEnv}, which is not set in the environment`,
      );
    }
    o.token = v;
  }
  if (a.credsFile) o.credsFile = a.credsFile;
  const tls = clientTls(cfg);
  if (tls) o.tls = tls;
  return o;
}

/** The TLS options clients use: `nats.auth.tls`, else the embedded servers' CA. */
export function clientTls(
  cfg: ClusterConfig,
): { caFile?: string; certFile?: string; keyFile?: string } | undefined {
  if (cfg.nats.auth.tls) return cfg.nats.auth.tls;
  if (cfg.nats.tls) return { caFile: cfg.nats.tls.caFile };
  return undefined;
}

/**
 * Every actor of the cluster with the options its process is started with. `urls` are the NATS
 * servers it connects to (known only once embedded servers run). Secrets are not put into the
 * options (they would show in `ps`): a password file is passed as a path, env names as names.
 */
export function planActors(cfg: ClusterConfig, urls: string[]): ActorPlan[] {
  const plans: ActorPlan[] = [];
  for (const role of ['shard', 'worker', 'serving'] as const) {
    if (role === 'shard' && cfg.shards.hosts !== undefined) {
      const names = shardHostNames(cfg.shards.hosts);
      for (let i = 0; i < names.length; i++) plans.push(planShardHost(cfg, i, urls));
      continue;
    }
    for (let i = 0; i < groupOf(cfg, role).count; i++) plans.push(planActor(cfg, role, i, urls));
  }
  return plans;
}

function groupOf(cfg: ClusterConfig, role: RoleName): { count: number; options: Record<string, unknown> } {
  return role === 'shard' ? cfg.shards : role === 'worker' ? cfg.workers : cfg.serving;
}

/** An actor's NATS options: secrets only as paths, never values (they would show in `ps`). */
function actorNats(cfg: ClusterConfig, urls: string[]): Record<string, unknown> {
  const a = cfg.nats.auth;
  const n: Record<string, unknown> = { servers: urls };
  if (a.user) n.user = a.user;
  if (a.credsFile) n.credsFile = a.credsFile;
  const tls = clientTls(cfg);
  if (tls) n.tls = tls;
  return n;
}

/** One actor's plan (`<role>-<index>`), validated by the role's schema. */
export function planActor(cfg: ClusterConfig, role: RoleName, index: number, urls: string[]): ActorPlan {
  const id = `${role}-${index}`;
  const nats = actorNats(cfg, urls);
  const raw = roleSchemas[role].build({ cfg, role, index, id, nats, options: groupOf(cfg, role).options });
  const r = roleSchemas[role].schema.safeParse(raw);
  if (!r.success) {
    throw new FreshetError('CONFIG', formatZodError(r.error, `${cfg.source} (${role}s.options for ${id})`));
  }
  return { role, id, index, options: raw };
}

/** Shard host number `index`: it runs the shards the placement gives it (docs/resharding.md). */
export function planShardHost(cfg: ClusterConfig, index: number, urls: string[]): ActorPlan {
  const id = `shard-host-${index}`;
  const host = shardHostNames(cfg.shards.hosts ?? 0)[index]!;
  const raw = shardHostOptions(host, {
    cfg,
    role: 'shard',
    index,
    id,
    nats: actorNats(cfg, urls),
    // its serving nodes are of this version and read host deltas: on unless the config says no;
    // split per serving slice when they are sliced
    options: {
      hostDeltas: true,
      ...((cfg.serving.slices ?? 1) > 1 ? { servingSlices: cfg.serving.slices } : {}),
      ...cfg.shards.options,
    },
  });
  if (cfg.shards.threads !== undefined) raw.threads = cfg.shards.threads;
  try {
    compileShardHostOptions(raw as ShardHostOptionsInput);
  } catch (e) {
    throw new FreshetError('CONFIG', `${cfg.source} (shards.options for ${id}): ${(e as Error).message}`);
  }
  return { role: 'shard', id, index, options: raw, command: 'shard-host' };
}

/** The config as YAML with defaults applied (for `freshet config show`). */
export function clusterConfigToYaml(cfg: ClusterConfig, urls?: string[]): string {
  const { source: _source, ...rest } = cfg;
  const doc: Record<string, unknown> = { ...rest };
  if (urls) doc.actors = planActors(cfg, urls).map((a) => ({ role: a.role, id: a.id, options: a.options }));
  return stringifyYaml(doc, { aliasDuplicateObjects: false });
}
