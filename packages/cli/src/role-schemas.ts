import type { z } from 'zod';
import { createModel } from '@freshet/model';
import { servingOptionsSchema } from '@freshet/serving';
import { shardOptionsSchema } from '@freshet/shard';
import { workerOptionsSchema } from '@freshet/worker';
import type { RoleName } from './role-names.js';

export { roleNames, type RoleName } from './role-names.js';

/**
 * The cluster-wide fields the adapters copy into every actor's options. A `ClusterConfig` is
 * one; naming only these keeps this module from importing cluster-config.ts, which imports it.
 */
export interface RoleClusterFields {
  cluster: string;
  dataDir: string;
  partitions: number;
  model: Record<string, unknown>;
  shards: { count: number };
  serving: { slices?: number | undefined };
}

/** What a role adapter gets to build one actor's options. */
export interface RoleBuildContext {
  cfg: RoleClusterFields;
  role: RoleName;
  index: number;
  id: string;
  /** The actor's NATS client options (see `planActor`). */
  nats: Record<string, unknown>;
  /** The group's `options` from the config file. */
  options: Record<string, unknown>;
}

interface RoleAdapter {
  /** The role process's own options schema (the one `--options-json` is parsed with). */
  schema: z.ZodType;
  /** Cluster-wide fields (cluster, NATS, ids, counts) merged under the group's own options. */
  build(ctx: RoleBuildContext): Record<string, unknown>;
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

/** A shard host's options: each shard it runs gets the group's options and the table spec. */
export function shardHostOptions(host: string, ctx: RoleBuildContext): Record<string, unknown> {
  return {
    cluster: ctx.cfg.cluster,
    nats: ctx.nats,
    host,
    dataDir: `${ctx.cfg.dataDir}/${ctx.id}`,
    shard: { ...ctx.options, model: modelSpecOf(ctx.cfg.model) },
  };
}

/** One adapter per role, mapping the cluster config onto that role's options. */
export const roleSchemas: Record<RoleName, RoleAdapter> = {
  shard: {
    schema: shardOptionsSchema,
    build: (ctx) => ({
      // the delta interval's budget counts the shards a sliced serving node hears
      ...((ctx.cfg.serving.slices ?? 1) > 1 ? { servingSlices: ctx.cfg.serving.slices } : {}),
      ...ctx.options,
      cluster: ctx.cfg.cluster,
      nats: ctx.nats,
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
      nats: ctx.nats,
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
      nats: ctx.nats,
      id: ctx.id,
      shards: ctx.cfg.shards.count,
      model: ctx.cfg.model,
      // node i holds slice i mod n: the slices' nodes interleave, so any count ≥ n covers each
      ...((ctx.cfg.serving.slices ?? 1) > 1
        ? { slice: { index: ctx.index % ctx.cfg.serving.slices!, count: ctx.cfg.serving.slices! } }
        : {}),
    }),
  },
};
