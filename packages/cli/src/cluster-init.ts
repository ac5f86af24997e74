import type { NatsConnection } from 'nats';
import { ensureStream, streamPartitions, type StreamOptionsInput } from '@freshet/client';
import { createModel } from '@freshet/model';
import { FreshetError, subjects, type ModelSpec } from '@freshet/protocol';
import {
  modelSpecConflicts,
  modelSpecKey,
  placementKey,
  placementKv,
  readModelSpec,
  readPlacement,
  sameModelSpec,
  writeModelSpec,
} from '@freshet/nats';
import { shardHostNames, type ClusterConfig } from './cluster-config.js';
import { placeShards } from './shard-placement-ops.js';

/**
 * What a cluster needs in NATS before its roles can run: the feedback and dead-letter streams,
 * the KV bucket (replicated like the streams) and the model spec shards read. `freshet init`
 * makes them from a cluster config; `freshet up` makes the streams the same way.
 */

export type Ensured = 'created' | 'updated' | 'unchanged';

/** What {@link initCluster} did, one entry per thing it owns. */
export interface InitReport {
  cluster: string;
  /** True when anything was created or updated. */
  changed: boolean;
  feedbackStream: { name: string; result: Ensured };
  deadLetterStream: { name: string; result: Ensured };
  kvBucket: { name: string; result: Ensured };
  modelSpec: { key: string; result: Ensured };
  /** With shard hosts (`shards.hosts`): the first placement, written once (moves are `shard place`'s). */
  placement?: { key: string; result: Ensured; epoch: number };
}

/** The feedback stream options of a cluster config (partitions and replicas from the config). */
export function clusterStreamOptions(cfg: ClusterConfig): StreamOptionsInput {
  return {
    ...cfg.stream,
    cluster: cfg.cluster,
    partitions: cfg.partitions,
    replicas: cfg.nats.replicas,
  };
}

/** The table spec shards serve for the config's model. */
export function modelSpecOfConfig(cfg: ClusterConfig): ModelSpec {
  return createModel(cfg.model as Parameters<typeof createModel>[0]).spec;
}

/**
 * Creates or updates, idempotently, what `cfg` needs in NATS. A change a running cluster cannot
 * take (another partition count, tables that differ in name, kind, dim or optimizer kind) is
 * refused with a CONFIG error before anything is touched.
 */
export async function initCluster(nc: NatsConnection, cfg: ClusterConfig): Promise<InitReport> {
  const s = subjects(cfg.cluster);
  const wanted = modelSpecOfConfig(cfg);
  const stored = await readModelSpec(nc, cfg.cluster);
  const conflicts: string[] = [];
  const partitions = await streamPartitions(nc, cfg.cluster);
  // events are routed by partitionOf(user, partitions): another count moves users between
  // partitions under the workers' feet, so the count is fixed for the life of a stream
  if (partitions !== undefined && partitions !== cfg.partitions) {
    conflicts.push(
      `partitions: stream ${s.feedbackStream} has ${partitions}, the config says ${cfg.partitions}`,
    );
  }
  if (stored.state === 'present') {
    conflicts.push(...modelSpecConflicts(stored.spec, wanted).map((c) => `model spec ${c}`));
  }
  const placed = await readPlacement(await placementKv(nc, cfg.cluster)).catch(() => undefined);
  if (placed && placed.value.hosts.length !== cfg.shards.count) {
    conflicts.push(
      `shards: the placement has ${placed.value.hosts.length}, the config says ${cfg.shards.count}`,
    );
  }
  if (conflicts.length > 0) {
    throw new FreshetError(
      'CONFIG',
      `refusing to change cluster ${cfg.cluster} (${cfg.source}); nothing was changed:\n` +
        conflicts.map((c) => `  - ${c}`).join('\n') +
        '\nPartitions and table layouts are fixed for the life of a cluster: keep the old values, ' +
        'or start a new cluster under another name.',
    );
  }
  const topology = await ensureStream(nc, clusterStreamOptions(cfg));
  let model: Ensured = 'unchanged';
  if (stored.state === 'missing' || !sameModelSpec(stored.spec, wanted)) {
    await writeModelSpec(nc, cfg.cluster, wanted);
    model = stored.state === 'missing' ? 'created' : 'updated';
  }
  // the first placement only: re-running init must not undo the moves made since
  let placement: InitReport['placement'];
  if (cfg.shards.hosts !== undefined) {
    placement = placed
      ? { key: placementKey, result: 'unchanged', epoch: placed.value.epoch }
      : {
          key: placementKey,
          result: 'created',
          epoch: (
            await placeShards(nc, cfg.cluster, {
              hosts: shardHostNames(cfg.shards.hosts),
              shards: cfg.shards.count,
              wait: false,
            })
          ).epoch,
        };
  }
  const results = [
    topology.feedback,
    topology.deadLetter,
    topology.kv,
    model,
    placement?.result ?? 'unchanged',
  ];
  return {
    cluster: cfg.cluster,
    changed: results.some((r) => r !== 'unchanged'),
    feedbackStream: { name: topology.stream, result: topology.feedback },
    deadLetterStream: { name: topology.deadLetterStream, result: topology.deadLetter },
    kvBucket: { name: s.kvBucket, result: topology.kv },
    modelSpec: { key: modelSpecKey, result: model },
    ...(placement ? { placement } : {}),
  };
}
