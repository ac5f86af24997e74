import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  nanos,
  type JetStreamManager,
  type NatsConnection,
  type StreamConfig,
} from 'nats';
import { FreshetError, subjects } from '@freshet/protocol';
import { compileStreamOptions, type StreamOptions, type StreamOptionsInput } from './stream-options.js';

/** What {@link ensureStream} found and did. */
export interface StreamTopology {
  stream: string;
  deadLetterStream: string;
  partitions: number;
  /** Per stream: created, updated (config differed) or unchanged. */
  feedback: Ensured;
  deadLetter: Ensured;
  /** The cluster's KV bucket (leases, batch manifests, model spec). */
  kv: Ensured;
  /** The bucket of compressed events' dictionaries (publishers may write there). */
  dictionaries: Ensured;
}

type Ensured = 'created' | 'updated' | 'unchanged';

type Wanted = Pick<
  StreamConfig,
  | 'name'
  | 'subjects'
  | 'retention'
  | 'storage'
  | 'num_replicas'
  | 'max_age'
  | 'max_bytes'
  | 'max_msgs'
  | 'max_msg_size'
  | 'duplicate_window'
  | 'discard'
>;

function feedbackConfig(o: StreamOptions): Wanted {
  const s = subjects(o.cluster);
  return {
    name: s.feedbackStream,
    // listed, not `fb.*`: a consumer's `*.<p>` filter must be a subset of the stream's subjects
    subjects: s.streamSubjects(o.partitions),
    retention: RetentionPolicy.Limits,
    storage: o.storage === 'memory' ? StorageType.Memory : StorageType.File,
    num_replicas: o.replicas,
    max_age: nanos(o.maxAgeMs),
    max_bytes: o.maxBytes,
    max_msgs: o.maxMsgs,
    max_msg_size: o.maxMsgBytes,
    duplicate_window: nanos(o.duplicateWindowMs),
    discard: o.discard === 'new' ? DiscardPolicy.New : DiscardPolicy.Old,
  };
}

function deadLetterConfig(o: StreamOptions): Wanted {
  const s = subjects(o.cluster);
  return {
    name: s.deadLetterStream,
    subjects: [s.deadLetter],
    retention: RetentionPolicy.Limits,
    storage: o.storage === 'memory' ? StorageType.Memory : StorageType.File,
    num_replicas: o.replicas,
    max_age: nanos(o.deadLetter.maxAgeMs),
    max_bytes: o.deadLetter.maxBytes,
    max_msgs: o.deadLetter.maxMsgs,
    max_msg_size: -1,
    duplicate_window: nanos(o.duplicateWindowMs),
    discard: DiscardPolicy.Old,
  };
}

function differs(have: StreamConfig, want: Wanted): boolean {
  for (const k of Object.keys(want) as (keyof Wanted)[]) {
    const a = have[k];
    const b = want[k];
    if (Array.isArray(a) || Array.isArray(b)) {
      if (JSON.stringify(a) !== JSON.stringify(b)) return true;
    } else if (a !== b) return true;
  }
  return false;
}

const isNotFound = (e: unknown) => /not found/i.test((e as Error)?.message ?? '');
const isInUse = (e: unknown) => /already in use|exists/i.test((e as Error)?.message ?? '');

async function ensureOne(jsm: JetStreamManager, want: Wanted): Promise<Ensured> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const info = await jsm.streams.info(want.name);
      if (!differs(info.config, want)) return 'unchanged';
      await jsm.streams.update(want.name, { ...info.config, ...want });
      return 'updated';
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    try {
      await jsm.streams.add(want);
      return 'created';
    } catch (e) {
      // Another process created it between our info and add: read it again.
      if (!isInUse(e)) throw e;
    }
  }
  throw new FreshetError('UNAVAILABLE', `could not create or update stream ${want.name}`);
}

/**
 * Creates or updates, idempotently, the cluster's feedback stream (one subject per partition)
 * and its dead-letter stream. Safe to call from every process at start, concurrently.
 */
export async function ensureStream(nc: NatsConnection, input: StreamOptionsInput): Promise<StreamTopology> {
  const o = compileStreamOptions(input);
  let jsm: JetStreamManager;
  try {
    jsm = await nc.jetstreamManager();
  } catch (e) {
    throw new FreshetError('UNAVAILABLE', `JetStream not available: ${(e as Error).message}`, { cause: e });
  }
  const fb = feedbackConfig(o);
  const dl = deadLetterConfig(o);
  // The KV bucket first: workers wait for the feedback stream and then open the bucket, which
  // must by then exist with the cluster's replicas (one they created would be R1).
  const kv = await ensureKv(nc, jsm, subjects(o.cluster).kvBucket, o.replicas);
  const dictionaries = await ensureKv(nc, jsm, subjects(o.cluster).dictBucket, o.replicas);
  const feedback = await ensureOne(jsm, fb);
  const deadLetter = await ensureOne(jsm, dl);
  return {
    stream: fb.name,
    deadLetterStream: dl.name,
    partitions: o.partitions,
    feedback,
    deadLetter,
    kv,
    dictionaries,
  };
}

/**
 * Creates a KV bucket of the cluster with `replicas`, or scales an existing one to it. Partition
 * leases and batch manifests live there: an R1 bucket on a server that goes down stops every
 * worker (no lease can be renewed) however well the feedback stream is replicated.
 */
async function ensureKv(
  nc: NatsConnection,
  jsm: JetStreamManager,
  bucket: string,
  replicas: number,
): Promise<Ensured> {
  const stream = `KV_${bucket}`;
  let existed = true;
  try {
    await jsm.streams.info(stream);
  } catch (e) {
    if (!isNotFound(e)) throw e;
    existed = false;
  }
  // views.kv creates the bucket when missing and leaves an existing one as it is
  await nc.jetstream().views.kv(bucket, { history: 1, replicas });
  const info = await jsm.streams.info(stream);
  if (info.config.num_replicas === replicas) return existed ? 'unchanged' : 'created';
  await jsm.streams.update(stream, { ...info.config, num_replicas: replicas });
  return 'updated';
}

/** The partition count of an existing feedback stream (from its subjects), or undefined. */
export async function streamPartitions(nc: NatsConnection, cluster: string): Promise<number | undefined> {
  const s = subjects(cluster);
  const jsm = await nc.jetstreamManager();
  try {
    const info = await jsm.streams.info(s.feedbackStream);
    return info.config.subjects.filter((x) => !s.isLabels(x)).length;
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}
