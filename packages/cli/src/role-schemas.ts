import type { z } from 'zod';
import { createModel } from '@freshet/model';
import { servingOptionsSchema } from '@freshet/serving';
import { shardOptionsSchema } from '@freshet/shard';
import { workerOptionsSchema } from '@freshet/worker';
import { clientTls, type ClusterConfig } from './cluster-config.js';

import type { RoleName } from './role-names.js';

export { roleNames, type RoleName } from './role-names.js';

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
  const tls = clientTls(ctx.cfg);
  if (tls) n.tls = tls;
  return n;
}

const specCache = new WeakMap<object, unknown>();
function modelSpecOf(model: Record<string, unknown>): unknown {
  let spec = specCache.get(model);
  if (spec === undefined) {
    spec = createModel(model as Parameters<typeof createModel>[0]).spec;
    specCache.set(model, spec);
  }
  return spec;
}

/** One adapter per role, mapping the cluster config onto that role's options. */
export const roleSchemas: Record<RoleName, RoleAdapter> = {
  shard: {
    schema: shardOptionsSchema,
    build: (ctx) => ({
      ...ctx.options,
      cluster: ctx.cfg.cluster,
      nats: natsFor(ctx),
      shard: ctx.index,
      shards: ctx.cfg.shards.count,
      // Shards hold tables, not models: they get the model's table spec.
      model: modelSpecOf(ctx.cfg.model),
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
