import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  headers,
  JsHeaders,
  nuid,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
  type PubAck,
  type StoredMsg,
} from 'nats';
import type { ActorLog } from '@freshet/nats';
import { FreshetError } from '@freshet/protocol';
import { checkpointFileName } from './checkpoint.js';
import { walSegmentFileName } from './wal.js';
import {
  describeLocalCheckpoint,
  sha256Hex,
  verifyCheckpoint,
  type CheckpointStore,
  type StoredCheckpoint,
  type StoredSegment,
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
  /** Where a failed deletion of old checkpoints is reported (the upload itself succeeded). */
  log?: ActorLog;
}

/** Object name of shard `shard`'s checkpoint as of segment `segment`. */
export const checkpointObjectName = (shard: number, segment: number) =>
  `shard-${shard}/${checkpointFileName(segment)}`;

/** The shard index a checkpoint object belongs to, or undefined for another object. */
export function shardOfObject(name: string): { shard: number; segment: number } | undefined {
  const m = /^shard-(\d+)\/checkpoint-(\d{10})\.ckpt$/.exec(name);
  return m ? { shard: Number(m[1]), segment: Number(m[2]) } : undefined;
}

/** Object name of shard `shard`'s sealed log segment `segment`. */
export const segmentObjectName = (shard: number, segment: number) =>
  `shard-${shard}/${walSegmentFileName(segment)}`;

/** A log segment object of a shard, with what its metadata records. */
export function describeSegmentObject(info: ObjectRecord): (StoredSegment & { shard: number }) | undefined {
  const m = /^shard-(\d+)\/wal-(\d{10})\.log$/.exec(info.name);
  if (!m) return undefined;
  const meta = info.metadata ?? {};
  const bytes = num(meta.bytes);
  const version = num(meta.version);
  const problem =
    meta.format !== WAL_FORMAT ||
    bytes === undefined ||
    version === undefined ||
    !/^[0-9a-f]{64}$/.test(meta.sha256 ?? '')
      ? `metadata of a log segment missing or malformed (format ${meta.format ?? '(none)'})`
      : undefined;
  return {
    name: info.name,
    shard: Number(m[1]),
    segment: Number(m[2]),
    version: version ?? 0,
    bytes: bytes ?? 0,
    sha256: meta.sha256 ?? '',
    ...(problem ? { problem } : {}),
  };
}

const FORMAT = 'FCK1';
const WAL_FORMAT = 'FWL1';

/** A listed object with everything its metadata records (for `freshet shard checkpoints`). */
export interface CheckpointObject extends StoredCheckpoint {
  shard: number;
  shards: number;
  model: string;
  /** When the upload finished (the object's mtime). */
  uploadedAt: string;
  /** Model tags holding it (`freshet model tag`): kept whatever `keep` says. */
  tags: string[];
}

/** The metadata field listing the model tags that hold a checkpoint (comma-separated names). */
export const TAGS_FIELD = 'tags';

/** The tag names in an object's metadata. */
export function tagsOf(info: Pick<ObjectRecord, 'metadata'>): string[] {
  const v = info.metadata?.[TAGS_FIELD] ?? '';
  return v ? v.split(',').filter(Boolean) : [];
}

const num = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined);

/** The info record the Object Store keeps per object (on `$O.<bucket>.M.<name>`). */
export interface ObjectRecord {
  name: string;
  description?: string;
  bucket: string;
  nuid: string;
  size: number;
  chunks: number;
  digest: string;
  deleted?: boolean;
  mtime: string;
  metadata?: Record<string, string>;
  options?: { max_chunk_size?: number };
}

/** Reads an object's metadata; `problem` says what is missing or malformed. */
export function describeObject(info: ObjectRecord): CheckpointObject | undefined {
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
    tags: tagsOf(info),
    ...(problem ? { problem } : {}),
  };
}

const CHUNK = 256 * 1024;
/**
 * Chunks in flight while uploading: few, since they share the connection with push replies (a
 * reply queued behind them waits for them to go out): 4 × 256 KiB.
 */
const UPLOAD_WINDOW = 4;
/** Chunk reads in flight while restoring (before the shard serves anything). */
const READ_WINDOW = 16;

/** nats.js's encodings: padded base64url for object names in subjects and for digests. */
const b64url = (b: Uint8Array) => Buffer.from(b).toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
const natsDigest = (d: Uint8Array) => `SHA-256=${b64url(d)}`;
/**
 * Direct get (`$JS.API.DIRECT.GET.<stream>`): nats.js (2.29 here) has it on every
 * JetStreamManager, what its KV and Object Store read with, but leaves it out of the public type.
 */
type WithDirect = JetStreamManager & {
  direct: {
    getMessage(
      stream: string,
      q: { last_by_subj: string } | { seq: number; next_by_subj: string },
    ): Promise<StoredMsg>;
  };
};

const isNotFound = (e: unknown) => /not found|no message/i.test((e as Error).message);

/**
 * One Object Store bucket, read and written in the store's own format (chunks on
 * `$O.<bucket>.C.<nuid>`, the info record on `$O.<bucket>.M.<base64url name>` as a rollup), so
 * nats.js `views.os` and the nats CLI read what this writes and the other way round. Not through
 * nats.js's ObjectStore, for three reasons: its `list` and `get` subscribe without naming the
 * stream, so nats.js looks the stream up with `$JS.API.STREAM.NAMES`, which the shard's NATS user
 * may not do (names of every cluster's streams); its `put` publishes all chunks of what one
 * stream read returns at once and hashes them synchronously, holding the event loop (and pushes)
 * for a whole checkpoint; and a chunk that fails while it is still reading is an unhandled
 * rejection, which ends the process. Here: stream info with a subjects filter and direct gets
 * (what the shard user may do), and at most UPLOAD_WINDOW chunks in flight, each awaited. Listing
 * costs one direct get per object of the bucket (all shards'): fine for checkpoints and the
 * segments of one checkpoint interval, not for thousands of objects.
 */
export class ObjectBucket {
  readonly stream: string;

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: WithDirect,
    readonly bucket: string,
  ) {
    this.stream = `OBJ_${bucket}`;
  }

  /** Opens a bucket, creating it when `create` is given and it does not exist; undefined if absent. */
  static async open(
    nc: NatsConnection,
    bucket: string,
    create?: { replicas: number },
  ): Promise<ObjectBucket | undefined> {
    const js = nc.jetstream();
    const jsm = await nc.jetstreamManager();
    try {
      await jsm.streams.info(`OBJ_${bucket}`);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      if (!create) return undefined;
      // nats.js creates it with the store's stream settings (rollups, direct get, discard new)
      await js.views.os(bucket, {
        storage: StorageType.File,
        replicas: create.replicas,
        description: 'Freshet shard checkpoints',
      });
    }
    return new ObjectBucket(js, jsm as WithDirect, bucket);
  }

  private metaSubject(name: string): string {
    return `$O.${this.bucket}.M.${b64url(new TextEncoder().encode(name))}`;
  }

  /** The info record of every live object. */
  async list(): Promise<ObjectRecord[]> {
    const si = await this.jsm.streams.info(this.stream, { subjects_filter: `$O.${this.bucket}.M.>` });
    const out: ObjectRecord[] = [];
    for (const subject of Object.keys(si.state.subjects ?? {})) {
      const r = await this.record(subject);
      if (r && !r.deleted) out.push(r);
    }
    return out;
  }

  /** The info record of `name` (deleted ones too), undefined when there is none. */
  info(name: string): Promise<ObjectRecord | undefined> {
    return this.record(this.metaSubject(name));
  }

  private async record(subject: string): Promise<ObjectRecord | undefined> {
    try {
      const m = await this.jsm.direct.getMessage(this.stream, { last_by_subj: subject });
      return JSON.parse(new TextDecoder().decode(m.data)) as ObjectRecord;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** The bytes of an object, checked against its record's size, chunk count and digest. */
  async read(r: ObjectRecord): Promise<Uint8Array> {
    const bad = (why: string) => new FreshetError('BAD_FRAME', `object ${r.name}: ${why}`);
    const chunks = (await this.readChunks(r)).map((m) => m.data);
    const out = new Uint8Array(r.size);
    const hash = createHash('sha256');
    let off = 0;
    for (const data of chunks) {
      if (off + data.byteLength > r.size) throw bad(`chunks hold more than its ${r.size} bytes`);
      out.set(data, off);
      hash.update(data);
      off += data.byteLength;
    }
    if (off !== r.size) throw bad(`chunks hold ${off} bytes, its record says ${r.size}`);
    if (natsDigest(hash.digest()) !== r.digest) throw bad(`digest mismatch (record ${r.digest})`);
    return out;
  }

  /**
   * The chunk messages of an object, in order. A direct get asks for the first message of a
   * subject at or after a sequence, one round trip each; one upload's chunks are usually
   * consecutive in the stream, so after the first, the rest are asked for at once (READ_WINDOW
   * in flight) at the sequences they would have. Answers that are all different are then exactly
   * the object's chunks; when other objects' chunks were interleaved (shards uploading at the
   * same time) some repeat, and the chunks are read again one after the other.
   */
  private async readChunks(r: ObjectRecord): Promise<StoredMsg[]> {
    const subject = `$O.${this.bucket}.C.${r.nuid}`;
    const get = async (seq: number, i: number) => {
      try {
        return await this.jsm.direct.getMessage(this.stream, { seq, next_by_subj: subject });
      } catch (e) {
        if (isNotFound(e))
          throw new FreshetError('BAD_FRAME', `object ${r.name}: chunk ${i + 1} of ${r.chunks} is missing`);
        throw e;
      }
    };
    if (r.chunks === 0) return [];
    const first = await get(1, 0);
    const guessed: StoredMsg[] = [first];
    for (let i = 1; i < r.chunks; i += READ_WINDOW) {
      const batch = [];
      for (let k = i; k < Math.min(r.chunks, i + READ_WINDOW); k++) batch.push(get(first.seq + k, k));
      guessed.push(...(await Promise.all(batch)));
    }
    if (guessed.every((m, k) => k === 0 || m.seq > guessed[k - 1]!.seq)) return guessed;
    const out = [first];
    for (let k = 1; k < r.chunks; k++) out.push(await get(out[k - 1]!.seq + 1, k));
    return out;
  }

  /** Writes (or replaces) object `name`; the replaced object's chunks are purged after. */
  async put(
    meta: { name: string; description: string; metadata: Record<string, string> },
    bytes: Uint8Array,
  ): Promise<void> {
    const old = await this.info(meta.name);
    const id = nuid.next();
    const chunkSubj = `$O.${this.bucket}.C.${id}`;
    const hash = createHash('sha256');
    const inFlight: Promise<PubAck>[] = [];
    let chunks = 0;
    try {
      for (let off = 0; off < bytes.byteLength; off += CHUNK) {
        const piece = bytes.subarray(off, off + CHUNK);
        hash.update(piece);
        const p = this.js.publish(chunkSubj, piece);
        // handled now, awaited below: a rejection while another chunk is awaited is not unhandled
        p.catch(() => undefined);
        inFlight.push(p);
        chunks++;
        if (inFlight.length >= UPLOAD_WINDOW) await inFlight.shift();
      }
      await Promise.all(inFlight);
      const record: ObjectRecord = {
        ...meta,
        options: { max_chunk_size: CHUNK },
        bucket: this.bucket,
        nuid: id,
        size: bytes.byteLength,
        chunks,
        digest: natsDigest(hash.digest()),
        deleted: false,
        mtime: new Date().toISOString(),
      };
      await this.writeRecord(record);
    } catch (e) {
      await this.purgeChunks(id).catch(() => undefined);
      throw e;
    }
    // the object now points at the new chunks; the replaced ones are garbage
    if (old && !old.deleted && old.nuid !== id) await this.purgeChunks(old.nuid).catch(() => undefined);
  }

  /**
   * Adds or removes model tags on an object (its info record is rewritten; the chunks stay).
   * Returns the tags it has after, or undefined when the object is gone (deleted meanwhile).
   */
  async retag(
    name: string,
    add: readonly string[],
    remove: readonly string[] = [],
  ): Promise<string[] | undefined> {
    const r = await this.info(name);
    if (!r || r.deleted) return undefined;
    const tags = new Set(tagsOf(r));
    for (const t of add) tags.add(t);
    for (const t of remove) tags.delete(t);
    const metadata = { ...(r.metadata ?? {}) };
    if (tags.size > 0) metadata[TAGS_FIELD] = [...tags].sort().join(',');
    else delete metadata[TAGS_FIELD];
    await this.writeRecord({ ...r, metadata });
    return [...tags].sort();
  }

  /** Deletes an object: a deleted record replaces its info, then its chunks are purged. */
  async delete(name: string): Promise<void> {
    const r = await this.info(name);
    if (!r || r.deleted) return;
    await this.writeRecord({ ...r, deleted: true, size: 0, chunks: 0, digest: '' });
    await this.purgeChunks(r.nuid);
  }

  private async writeRecord(r: ObjectRecord): Promise<void> {
    const h = headers();
    h.set(JsHeaders.RollupHdr, JsHeaders.RollupValueSubject);
    await this.js.publish(this.metaSubject(r.name), new TextEncoder().encode(JSON.stringify(r)), {
      headers: h,
    });
  }

  private async purgeChunks(id: string): Promise<void> {
    await this.jsm.streams.purge(this.stream, { filter: `$O.${this.bucket}.C.${id}` });
  }
}

/**
 * The checkpoints in bucket `bucket` without creating it (`freshet shard checkpoints`); undefined
 * when the bucket does not exist (no shard has uploaded one).
 */
export async function listBucketCheckpoints(
  nc: NatsConnection,
  bucket: string,
): Promise<CheckpointObject[] | undefined> {
  const b = await ObjectBucket.open(nc, bucket);
  return b && listCheckpointObjects(b);
}

/** Every checkpoint object of a bucket (all shards), newest first per shard. */
export async function listCheckpointObjects(bucket: ObjectBucket): Promise<CheckpointObject[]> {
  const out: CheckpointObject[] = [];
  for (const r of await bucket.list()) {
    const c = describeObject(r);
    if (c) out.push(c);
  }
  return out.sort((a, b) => a.shard - b.shard || b.segment - a.segment);
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
    readonly bucket: ObjectBucket,
    readonly o: ObjectStoreCheckpointsOptions,
  ) {}

  /** Opens the bucket, creating it (file storage, `replicas`) when it does not exist. */
  static async open(nc: NatsConnection, o: ObjectStoreCheckpointsOptions): Promise<ObjectStoreCheckpoints> {
    try {
      const bucket = await ObjectBucket.open(nc, o.bucket, { replicas: o.replicas });
      return new ObjectStoreCheckpoints(bucket!, o);
    } catch (e) {
      throw new FreshetError('UNAVAILABLE', `checkpoint bucket ${o.bucket}: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }

  async list(): Promise<StoredCheckpoint[]> {
    const o = this.o;
    return (await listCheckpointObjects(this.bucket))
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
    const r = await this.bucket.info(c.name);
    if (!r || r.deleted)
      throw new FreshetError('BAD_FRAME', `checkpoint ${c.name}: deleted while being read`);
    const bytes = await this.bucket.read(r);
    await verifyCheckpoint(c, bytes);
    return bytes;
  }

  /** This shard's mirrored log segments, ascending. */
  async listSegments(): Promise<StoredSegment[]> {
    const out: StoredSegment[] = [];
    for (const r of await this.bucket.list()) {
      const s = describeSegmentObject(r);
      if (s && s.shard === this.o.shard) out.push(s);
    }
    return out.sort((a, b) => a.segment - b.segment);
  }

  async readSegment(s: StoredSegment): Promise<Uint8Array> {
    const bad = (why: string) => new FreshetError('BAD_FRAME', `log segment ${s.name}: ${why}`);
    if (s.problem) throw bad(s.problem);
    const r = await this.bucket.info(s.name);
    if (!r || r.deleted) throw bad('deleted while being read');
    const bytes = await this.bucket.read(r);
    if (bytes.byteLength !== s.bytes) throw bad(`${bytes.byteLength} bytes, recorded ${s.bytes}`);
    const sum = await sha256Hex(bytes);
    if (sum !== s.sha256) throw bad(`checksum mismatch (sha256 ${sum}, recorded ${s.sha256})`);
    return bytes;
  }

  async putSegment(dir: string, segment: number, version: number): Promise<StoredSegment> {
    const o = this.o;
    const buf = await readFile(join(dir, walSegmentFileName(segment)));
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    const info: StoredSegment = {
      name: segmentObjectName(o.shard, segment),
      segment,
      version,
      bytes: bytes.byteLength,
      sha256: await sha256Hex(bytes),
    };
    const have = await this.bucket.info(info.name);
    if (have && !have.deleted && have.metadata?.sha256 === info.sha256) return info;
    await this.bucket.put(
      {
        name: info.name,
        description: `shard ${o.shard}/${o.shards} log segment ${segment}, up to version ${version}`,
        metadata: {
          format: WAL_FORMAT,
          segment: String(segment),
          version: String(version),
          bytes: String(info.bytes),
          sha256: info.sha256,
          shard: String(o.shard),
          shards: String(o.shards),
          model: o.model,
        },
      },
      bytes,
    );
    return info;
  }

  async put(dir: string, segment: number): Promise<StoredCheckpoint> {
    const o = this.o;
    const { info, bytes } = await describeLocalCheckpoint(dir, segment);
    const name = checkpointObjectName(o.shard, segment);
    const have = await this.bucket.info(name);
    // already there (a restart uploads the newest local checkpoint again otherwise)
    // a tagged object is never replaced: its bytes are what the tag promises (a rollback continues
    // at a later segment, so the same name with other bytes is not expected)
    if (have && !have.deleted && tagsOf(have).length > 0 && have.metadata?.sha256 !== info.sha256) {
      throw new FreshetError(
        'CONFIG',
        `${name} is held by model tag(s) ${tagsOf(have).join(', ')} with other contents; not replaced`,
      );
    }
    if (!have || have.deleted || have.metadata?.sha256 !== info.sha256) {
      await this.bucket.put(
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
      );
    }
    // the new one is there: a failed clean-up costs space, not the upload (tried again next time)
    await this.prune().catch((e: unknown) =>
      this.o.log?.('warn', 'old checkpoints not deleted', {
        code: e instanceof FreshetError ? e.code : 'UNAVAILABLE',
        error: (e as Error).message,
      }),
    );
    return { ...info, name };
  }

  /**
   * Deletes this shard's checkpoints beyond the newest `keep`, and the log segments the newest
   * checkpoint covers; returns their names. Checkpoints held by a model tag are neither deleted
   * nor counted in `keep`.
   */
  async prune(): Promise<string[]> {
    const mine = (await listCheckpointObjects(this.bucket)).filter((c) => c.shard === this.o.shard);
    const newest = mine[0]?.segment ?? 0;
    const untagged = mine.filter((c) => c.tags.length === 0);
    // the listing may predate a tag written meanwhile: each is checked again just before it goes
    const old: string[] = [];
    for (const c of untagged.slice(this.o.keep)) {
      const r = await this.bucket.info(c.name);
      if (r && !r.deleted && tagsOf(r).length === 0) old.push(c.name);
    }
    for (const s of await this.listSegments()) if (s.segment <= newest) old.push(s.name);
    for (const name of old) await this.bucket.delete(name);
    return old;
  }
}
