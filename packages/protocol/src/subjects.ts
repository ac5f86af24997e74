import { FreshetError } from './errors.js';

const tokenRe = /^[A-Za-z0-9_-]{1,64}$/;

/** Cluster names become subject tokens and stream names: letters, digits, `-`, `_`. */
export function assertClusterName(cluster: string): void {
  if (!tokenRe.test(cluster)) {
    throw new FreshetError('CONFIG', `cluster name "${cluster}" must match ${String(tokenRe)}`);
  }
}

/**
 * Every NATS subject, stream, bucket and queue name of one cluster, in one place.
 * Roles never build subjects by hand, so permissions (see deploy/) can be written against these.
 */
export function subjects(cluster: string) {
  assertClusterName(cluster);
  const p = `freshet.${cluster}`;
  const streamSuffix = cluster.replace(/-/g, '_').toUpperCase();
  return {
    cluster,
    prefix: p,
    /** Feedback events of one partition (JetStream). */
    feedback: (partition: number) => `${p}.fb.${partition}`,
    feedbackAll: `${p}.fb.*`,
    feedbackStream: `FRESHET_FB_${streamSuffix}`,
    /** Rejected input, with a reason code in the `Freshet-Reason` header. */
    deadLetter: `${p}.dlq`,
    deadLetterStream: `FRESHET_DLQ_${streamSuffix}`,
    pull: (shard: number) => `${p}.ps.${shard}.pull`,
    push: (shard: number) => `${p}.ps.${shard}.push`,
    snapshot: (shard: number) => `${p}.ps.${shard}.snapshot`,
    delta: (shard: number) => `${p}.delta.${shard}`,
    deltaAll: `${p}.delta.*`,
    /** Score/rank requests, answered by the serving queue group. */
    score: `${p}.score`,
    rank: `${p}.rank`,
    servingQueue: `freshet-serving-${cluster}`,
    /** Worker clocks for SSP and membership heartbeats. */
    workerClock: (worker: string) => `${p}.clock.${worker}`,
    workerClockAll: `${p}.clock.*`,
    /** Cluster-wide state (model spec, shard map, partition leases). */
    kvBucket: `freshet_${cluster.replace(/-/g, '_')}`,
    objectStore: `freshet_ckpt_${cluster.replace(/-/g, '_')}`,
    /** NATS service API names; `freshet status` finds actors by these. */
    serviceName: (role: 'shard' | 'worker' | 'serving') => `freshet-${role}`,
  } as const;
}

export type Subjects = ReturnType<typeof subjects>;
