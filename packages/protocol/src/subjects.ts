import { FreshetError } from './errors.js';

const tokenRe = /^[A-Za-z0-9_-]{1,64}$/;

/** Cluster names become subject tokens and stream names: letters, digits, `-`, `_`. */
export function assertClusterName(cluster: string): void {
  if (!tokenRe.test(cluster)) {
    throw new FreshetError('CONFIG', `cluster name "${cluster}" must match ${String(tokenRe)}`);
  }
}

/** Whether a subject is a labels subject (`freshet.<cluster>.lb.<partition>`) of any cluster. */
export function isLabelsSubject(subject: string): boolean {
  return subject.split('.', 3)[2] === 'lb';
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
    /**
     * Pre-labelled `example` events of one partition, in the same stream. Only the labeller role
     * may publish here (NATS permissions); workers dead-letter an `example` that arrives on a
     * feedback subject (FORBIDDEN_KIND), so plain publishers cannot inject labels.
     */
    labels: (partition: number) => `${p}.lb.${partition}`,
    labelsAll: `${p}.lb.*`,
    /** The consumer filter of one partition: its feedback and its labels (`*` = fb | lb). */
    partitionFilter: (partition: number) => `${p}.*.${partition}`,
    /** The feedback stream's subjects: feedback then labels, one each per partition, listed. */
    streamSubjects: (partitions: number) => [
      ...Array.from({ length: partitions }, (_, i) => `${p}.fb.${i}`),
      ...Array.from({ length: partitions }, (_, i) => `${p}.lb.${i}`),
    ],
    /** Whether a stream subject is a labels subject (else feedback). */
    isLabels: (subject: string) => subject.startsWith(`${p}.lb.`),
    feedbackStream: `FRESHET_FB_${streamSuffix}`,
    /** Rejected input, with a reason code in the `Freshet-Reason` header. */
    deadLetter: `${p}.dlq`,
    deadLetterStream: `FRESHET_DLQ_${streamSuffix}`,
    pull: (shard: number) => `${p}.ps.${shard}.pull`,
    push: (shard: number) => `${p}.ps.${shard}.push`,
    /**
     * A shard host's pulls or pushes for several of its shards in one message (ps-mux.ts). A
     * token of its own: host names may be digits, which `ps.<n>` would take for a shard.
     */
    hostPull: (host: string) => `${p}.psh.${host}.pull`,
    hostPush: (host: string) => `${p}.psh.${host}.push`,
    /** A shard host's deltas of several shards in one message (shard option `hostDeltas`). */
    hostDelta: (host: string) => `${p}.hdelta.${host}`,
    /**
     * A host's deltas of the shards of one serving slice (shard option `servingSlices`): the
     * shards s with s % count = index, for the serving nodes that hold that slice.
     */
    hostDeltaSlice: (host: string, count: number, index: number) => `${p}.hdelta.${host}.${count}.${index}`,
    /** What a node holding slice `index` of `count` hears of hosts that publish per slice. */
    hostDeltaSliceAll: (count: number, index: number) => `${p}.hdelta.*.${count}.${index}`,
    /** Every host delta, whole or per slice (a serving node holding the whole model). */
    hostDeltaAll: `${p}.hdelta.>`,
    /** Host deltas of hosts that publish whole (what a sliced node filters to its shards). */
    hostDeltaWhole: `${p}.hdelta.*`,
    snapshot: (shard: number) => `${p}.ps.${shard}.snapshot`,
    delta: (shard: number) => `${p}.delta.${shard}`,
    deltaAll: `${p}.delta.*`,
    /** Score/rank requests, answered by the serving queue group. */
    score: `${p}.score`,
    rank: `${p}.rank`,
    servingQueue: `freshet-serving-${cluster}`,
    /**
     * Rows of one serving slice (serving option `slice`), asked by the node scoring a request of
     * the nodes holding that slice (a queue group per slice; packages/serving/README.md "Sliced serving").
     */
    sliceRows: (count: number, index: number) => `${p}.srows.${count}.${index}`,
    sliceQueue: (count: number, index: number) => `freshet-slice-${cluster}-${count}-${index}`,
    /** Worker clocks for SSP and membership heartbeats. */
    workerClock: (worker: string) => `${p}.clock.${worker}`,
    workerClockAll: `${p}.clock.*`,
    /** Cluster-wide state (model spec, shard map, partition leases). */
    kvBucket: `freshet_${cluster.replace(/-/g, '_')}`,
    objectStore: `freshet_ckpt_${cluster.replace(/-/g, '_')}`,
    /**
     * Preset dictionaries of compressed feedback events, keyed by id (8 hex digits, their
     * Adler-32): apart from `kvBucket` so publishers may write here and nowhere else.
     */
    dictBucket: `freshet_dict_${cluster.replace(/-/g, '_')}`,
    /**
     * Each role's reply-inbox prefix (nats.js `inboxPrefix`): NATS permissions let a role subscribe
     * to its own prefix only, so no role reads another's replies (pulled weights, acks, ranks).
     */
    inboxPrefix: (role: string) => `_INBOX_${cluster}_${role}`,
    /** NATS service API names; `freshet status` finds actors by these. */
    serviceName: (role: 'shard' | 'worker' | 'serving') => `freshet-${role}`,
  } as const;
}

export type Subjects = ReturnType<typeof subjects>;
