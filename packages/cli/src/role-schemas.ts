import { z } from 'zod';
import { natsOptionsSchema } from '@freshet/nats';
import { servingOptionsSchema } from '@freshet/serving';
import { workerOptionsSchema } from '@freshet/worker';
import type { ClusterConfig } from './cluster-config.js';

/** The role processes a cluster config plans. */
export type RoleName = 'shard' | 'worker' | 'serving';
export const roleNames: readonly RoleName[] = ['shard', 'worker', 'serving'];

/** What a role adapter gets to build one actor's options. */
export interface RoleBuildContext {
  cfg: ClusterConfig;
  role: RoleName;
  index: number;
  id: string;
  urls: string[];
  /** The group's `options` from the config file. */
  options: Record<string, unknown>;
}

interface RoleAdapter {
  /** The role process's own options schema (the one `--options-json` is parsed with). */
  schema: z.ZodType;
  /** Cluster-wide fields (cluster, NATS, ids, counts) merged under the group's own options. */
  build(ctx: RoleBuildContext): Record<string, unknown>;
}

function natsFor(ctx: RoleBuildContext): Record<string, unknown> {
  const a = ctx.cfg.nats.auth;
  const n: Record<string, unknown> = { servers: ctx.urls };
  if (a.user) n.user = a.user;
  if (a.credsFile) n.credsFile = a.credsFile;
  if (a.tls) n.tls = a.tls;
  return n;
}

// The shard package exports no options schema yet: its options are checked for the common fields
// only here; the shard process validates the rest when it starts.
const commonSchema = z.object({ cluster: z.string(), nats: natsOptionsSchema }).passthrough();

/** One adapter per role, mapping the cluster config onto that role's options. */
export const roleSchemas: Record<RoleName, RoleAdapter> = {
  shard: {
    schema: commonSchema,
    build: (ctx) => ({
      ...ctx.options,
      cluster: ctx.cfg.cluster,
      nats: natsFor(ctx),
      shard: ctx.index,
      shards: ctx.cfg.shards.count,
      model: ctx.cfg.model,
      dataDir: `${ctx.cfg.dataDir}/${ctx.id}`,
    }),
  },
  worker: {
    schema: workerOptionsSchema.strict(),
    build: (ctx) => ({
      ...ctx.options,
      cluster: ctx.cfg.cluster,
      nats: natsFor(ctx),
      id: ctx.id,
      shards: ctx.cfg.shards.count,
      partitions: ctx.cfg.partitions,
      model: ctx.cfg.model,
    }),
  },
  serving: {
    schema: servingOptionsSchema,
    build: (ctx) => ({
      ...ctx.options,
      cluster: ctx.cfg.cluster,
      nats: natsFor(ctx),
      id: ctx.id,
      shards: ctx.cfg.shards.count,
      model: ctx.cfg.model,
    }),
  },
};
