import { createHash } from 'node:crypto';
import {
  headers,
  JsHeaders,
  nuid,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
  type ObjectInfo,
  type ObjectStore,
  type PubAck,
} from 'nats';
import { FreshetError } from '@freshet/protocol';
import { checkpointFileName } from './checkpoint.js';
import {
  describeLocalCheckpoint,
  verifyCheckpoint,
  type CheckpointStore,
  type StoredCheckpoint,
} from './checkpoint-store.js';

/** Where and for which shard a {@link ObjectStoreCheckpoints} keeps checkpoints. */
export interface ObjectStoreCheckpointsOptions {
  /** Bucket (one per cluster: `subjects(cluster).objectStore` by default). */
  bucket: string;
  shard: number;
  /** The cluster's shard count: a checkpoint of another count holds other keys. */
  shards: number;
  /** The model spec's name, recorded and checked like the shard count. */
  model: string;
  /** Replicas of the bucket's stream, when this call creates it. */
  replicas: number;
  /** Checkpoints kept per shard; older ones are deleted after each upload. */
  keep: number;
}

/** Object name of shard `shard`'s checkpoint as of segment `segment`. */
export const checkpointObjectName = (shard: number, segment: number) =>
  `shard-${shard}/${checkpointFileName(segment)}`;

/** The shard index a checkpoint object belongs to, or undefined for another object. */
export function shardOfObject(name: string): { shard: number; segment: number } | undefined {
  const m = /^shard-(\d+)\/checkpoint-(\d{10})\.ckpt$/.exec(name);
  return m ? { shard: Number(m[1]), segment: Number(m[2]) } : undefined;
}

const FORMAT = 'FCK1';

/** A listed object with everything its metadata records (for `freshet shard checkpoints`). */
export interface CheckpointObject extends StoredCheckpoint {
  shard: number;
  shards: number;
  model: string;
  /** When the upload finished (the object's mtime). */
  uploadedAt: string;
}

const num = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined);

/** Reads an object's metadata; `problem` says what is missing or malformed. */
export function describeObject(info: ObjectInfo): CheckpointObject | undefined {
  const at = shardOfObject(info.name);
  if (!at) return undefined;
  const m = info.metadata ?? {};
  const fields = {
    segment: num(m.segment),
    version: num(m.version),
    deltaSeq: num(m.deltaSeq),
    createdAt: num(m.createdAt),
    bytes: num(m.bytes),
    shards: num(m.shards),
  };
  const missing = Object.entries(fields)
    .filter(([, v]) => v === undefined)
    .map(([k]) => k);
  let problem: string | undefined;
  if (m.format !== FORMAT) problem = `format ${m.format ?? '(none)'}, expected ${FORMAT}`;
  else if (missing.length > 0) problem = `metadata lacks ${missing.join(', ')}`;
  else if (!/^[0-9a-f]{64}$/.test(m.sha256 ?? '')) problem = 'metadata lacks a sha256 checksum';
  else if (fields.segment !== at.segment)
    problem = `metadata segment ${fields.segment} under name ${info.name}`;
  return {
    name: info.name,
    shard: at.shard,
    segment: at.segment,
    version: fields.version ?? 0,
    deltaSeq: fields.deltaSeq ?? 0,
    createdAt: fields.createdAt ?? 0,
    bytes: fields.bytes ?? 0,
    sha256: m.sha256 ?? '',
    shards: fields.shards ?? 0,
    model: m.model ?? '',
    uploadedAt: info.mtime,
    ...(problem ? { problem } : {}),
  };
}

/** Every checkpoint object of a bucket (all shards), newest first per shard. */
export async function listCheckpointObjects(os: ObjectStore): Promise<CheckpointObject[]> {
  const out: CheckpointObject[] = [];
  for (const info of await os.list()) {
    if (info.deleted) continue;
    const c = describeObject(info);
    if (c) out.push(c);
  }
  return out.sort((a, b) => a.shard - b.shard || b.segment - a.segment);
}

const CHUNK = 256 * 1024;
const WINDOW = 8;

/** nats.js's digest form: `SHA-256=` + padded base64url. */
const natsDigest = (d: Buffer) => `SHA-256=${d.toString('base64').replace(/\+/g, '-').replace(/\//g, '_')}`;

/**
 * Writes an object in the Object Store's own format (chunks on `$O.<bucket>.C.<nuid>`, then the
 * info on `$O.<bucket>.M.<name>` as a rollup), readable by nats.js `get` and the nats CLI.
 * Not nats.js `put`: it publishes every chunk of what one stream read returns at once and hashes
 * it synchronously (a whole checkpoint would hold the event loop, and pushes, for that long),
 * and a chunk that fails while later chunks are still being read is an unhandled rejection,
 * which ends the process. Here at most WINDOW chunks are in flight, each awaited.
 */
async function putObject(
  js: JetStreamClient,
  jsm: JetStreamManager,
  bucket: string,
  meta: { name: string; description: string; metadata: Record<string, string> },
  bytes: Uint8Array,
  old: ObjectInfo | null,
): Promise<void> {
  const id = nuid.next();
  const chunkSubj = `$O.${bucket}.C.${id}`;
  const hash = createHash('sha256');
  const inFlight: Promise<PubAck>[] = [];
  let chunks = 0;
  try {
    for (let off = 0; off < bytes.byteLength; off += CHUNK) {
      const piece = bytes.subarray(off, off + CHUNK);
      hash.update(piece);
      const p = js.publish(chunkSubj, piece);
      // handled now, awaited below: a rejection while another chunk is awaited is not unhandled
      p.catch(() => undefined);
      inFlight.push(p);
      chunks++;
      if (inFlight.length >= WINDOW) await inFlight.shift();
    }
    await Promise.all(inFlight);
    const info = {
      name: meta.name,
      description: meta.description,
      options: { max_chunk_size: CHUNK },
      metadata: meta.metadata,
      bucket,
      nuid: id,
      size: bytes.byteLength,
      chunks,
      digest: natsDigest(hash.digest()),
      deleted: false,
      mtime: new Date().toISOString(),
    };
    const h = headers();
    h.set(JsHeaders.RollupHdr, JsHeaders.RollupValueSubject);
    const subject = `$O.${bucket}.M.${Buffer.from(meta.name).toString('base64').replace(/\+/g, '-').replace(/\//g, '_')}`;
    await js.publish(subject, new TextEncoder().encode(JSON.stringify(info)), { headers: h });
  } catch (e) {
    await jsm.streams.purge(`OBJ_${bucket}`, { filter: chunkSubj }).catch(() => undefined);
    throw e;
  }
  // the object now points at the new chunks; the replaced ones are garbage
  if (old && !old.deleted && old.nuid !== id) {
    await jsm.streams.purge(`OBJ_${bucket}`, { filter: `$O.${bucket}.C.${old.nuid}` }).catch(() => undefined);
  }
}

/**
 * A shard's checkpoints in the cluster's JetStream Object Store bucket, objects
 * `shard-<index>/checkpoint-<segment>.ckpt` with the log position (segment, version, delta
 * seq), size, SHA-256, shard count and model name in their metadata. Uploads keep the newest
 * `keep` of this shard and delete the older ones.
 */
export class ObjectStoreCheckpoints implements CheckpointStore {
  readonly kind = 'object-store';

  private constructor(
    private readonly os: ObjectStore,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    readonly o: ObjectStoreCheckpointsOptions,
  ) {}

  /** Opens the bucket, creating it (file storage, `replicas`) when it does not exist. */
  static async open(nc: NatsConnection, o: ObjectStoreCheckpointsOptions): Promise<ObjectStoreCheckpoints> {
    try {
      const js = nc.jetstream();
      const os = await js.views.os(o.bucket, {
        storage: StorageType.File,
        replicas: o.replicas,
        description: 'Freshet shard checkpoints',
      });
      return new ObjectStoreCheckpoints(os, js, await nc.jetstreamManager(), o);
    } catch (e) {
      throw new FreshetError('UNAVAILABLE', `checkpoint bucket ${o.bucket}: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }

  async list(): Promise<StoredCheckpoint[]> {
    const o = this.o;
    return (await listCheckpointObjects(this.os))
      .filter((c) => c.shard === o.shard)
      .map((c) => {
        if (c.problem) return c;
        if (c.shards !== o.shards)
          return { ...c, problem: `written by a cluster of ${c.shards} shards, this one has ${o.shards}` };
        if (c.model !== o.model)
          return { ...c, problem: `written for model ${c.model}, this shard runs ${o.model}` };
        return c;
      });
  }

  async read(c: StoredCheckpoint): Promise<Uint8Array> {
    let bytes: Uint8Array | null;
    try {
      bytes = await this.os.getBlob(c.name);
    } catch (e) {
      // nats.js checks its own digest of the chunks: a mismatch is a corrupt object
      if (/digest/i.test((e as Error).message)) {
        throw new FreshetError('BAD_FRAME', `checkpoint ${c.name}: ${(e as Error).message}`, { cause: e });
      }
      throw e;
    }
    if (!bytes) throw new FreshetError('BAD_FRAME', `checkpoint ${c.name}: deleted while being read`);
    await verifyCheckpoint(c, bytes);
    return bytes;
  }

  async put(dir: string, segment: number): Promise<StoredCheckpoint> {
    const o = this.o;
    const { info, bytes } = await describeLocalCheckpoint(dir, segment);
    const name = checkpointObjectName(o.shard, segment);
    const have = await this.os.info(name);
    // already there (a restart uploads the newest local checkpoint again otherwise)
    if (!have || have.deleted || have.metadata?.sha256 !== info.sha256) {
      await putObject(
        this.js,
        this.jsm,
        this.o.bucket,
        {
          name,
          description: `shard ${o.shard}/${o.shards} as of log segment ${segment}`,
          metadata: {
            format: FORMAT,
            segment: String(segment),
            version: String(info.version),
            deltaSeq: String(info.deltaSeq),
            createdAt: String(info.createdAt),
            bytes: String(info.bytes),
            sha256: info.sha256,
            shard: String(o.shard),
            shards: String(o.shards),
            model: o.model,
          },
        },
        bytes,
        have,
      );
    }
    await this.prune();
    return { ...info, name };
  }

  /** Deletes this shard's checkpoints beyond the newest `keep`; returns their names. */
  async prune(): Promise<string[]> {
    const old = (await listCheckpointObjects(this.os))
      .filter((c) => c.shard === this.o.shard)
      .slice(this.o.keep)
      .map((c) => c.name);
    for (const name of old) await this.os.delete(name);
    return old;
  }
}
