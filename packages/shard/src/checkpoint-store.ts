import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FreshetError, hasCode, type ErrorCode } from '@freshet/protocol';
import type { ActorLog } from '@freshet/nats';
import {
  checkpointFileName,
  installCheckpoint,
  installFile,
  listCheckpoints,
  parseCheckpoint,
} from './checkpoint.js';
import { syncDir, walSegmentFileName } from './wal.js';

/**
 * Where a shard's checkpoints live: its data dir ({@link DirCheckpointStore}) or, besides it,
 * the cluster's JetStream Object Store (object-store-checkpoints.ts). A store holds the
 * checkpoints of one shard index, each with its log position; the data dir stays where
 * checkpoints are written first and the log is replayed from.
 */
export interface CheckpointStore {
  readonly kind: 'dir' | 'object-store';
  /** This shard's checkpoints, newest (highest segment) first. */
  list(): Promise<StoredCheckpoint[]>;
  /** The bytes of one listed checkpoint, verified (magic, sizes, checksum); BAD_FRAME if not. */
  read(c: StoredCheckpoint): Promise<Uint8Array>;
  /** Stores the data dir's checkpoint file of `segment` (no-op where it is already there). */
  put(dir: string, segment: number): Promise<StoredCheckpoint>;
  /** Sealed log segments mirrored between checkpoints, ascending (stores that keep them). */
  listSegments?(): Promise<StoredSegment[]>;
  /** The bytes of one, verified (size, checksum); BAD_FRAME if not. */
  readSegment?(s: StoredSegment): Promise<Uint8Array>;
  /** Stores the data dir's sealed segment `segment`, which ends at `version`. */
  putSegment?(dir: string, segment: number, version: number): Promise<StoredSegment>;
}

/** A sealed log segment in a store. */
export interface StoredSegment {
  name: string;
  segment: number;
  /** The shard's version at its end (pushes applied up to and with it). */
  version: number;
  bytes: number;
  sha256: string;
  problem?: string;
}

/** A checkpoint in a store and its log position. */
export interface StoredCheckpoint {
  /** File or object name. */
  name: string;
  /** The WAL segment it covers (everything logged up to its end). */
  segment: number;
  version: number;
  deltaSeq: number;
  createdAt: number;
  bytes: number;
  /** Hex SHA-256 of the bytes; '' where the store keeps none (the data dir). */
  sha256: string;
  /** Why it cannot be used (malformed metadata), found while listing. */
  problem?: string;
}

/** SHA-256 of `data` in hex, 2 MB per event-loop turn so that pushes go on meanwhile. */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  const h = createHash('sha256');
  const step = 2 << 20;
  for (let off = 0; off < data.byteLength; off += step) {
    h.update(data.subarray(off, off + step));
    if (off + step < data.byteLength) await new Promise((r) => setImmediate(r));
  }
  return h.digest('hex');
}

/**
 * Verifies bytes read from a store against what was listed: size, checksum (when recorded),
 * then the file's own checks (magic, header, sizes) and the log position. BAD_FRAME if any fails.
 */
export async function verifyCheckpoint(c: StoredCheckpoint, bytes: Uint8Array): Promise<void> {
  const bad = (why: string) => new FreshetError('BAD_FRAME', `checkpoint ${c.name}: ${why}`);
  if (c.problem) throw bad(c.problem);
  if (bytes.byteLength !== c.bytes) throw bad(`${bytes.byteLength} bytes, recorded ${c.bytes}`);
  if (c.sha256) {
    const sum = await sha256Hex(bytes);
    if (sum !== c.sha256) throw bad(`checksum mismatch (sha256 ${sum}, recorded ${c.sha256})`);
  }
  const { header } = parseCheckpoint(bytes, c.name);
  if (header.segment !== c.segment || header.version !== c.version || header.deltaSeq !== c.deltaSeq) {
    throw bad(
      `its header says segment ${header.segment}, version ${header.version}, delta seq ` +
        `${header.deltaSeq}; recorded ${c.segment}, ${c.version}, ${c.deltaSeq}`,
    );
  }
}

/** Reads the header of a local checkpoint file as a {@link StoredCheckpoint} (with its checksum). */
export async function describeLocalCheckpoint(
  dir: string,
  segment: number,
): Promise<{
  info: StoredCheckpoint;
  bytes: Uint8Array;
}> {
  const name = checkpointFileName(segment);
  const buf = await readFile(join(dir, name));
  const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  const { header } = parseCheckpoint(bytes, name);
  const info: StoredCheckpoint = {
    name,
    segment: header.segment,
    version: header.version,
    deltaSeq: header.deltaSeq,
    createdAt: header.createdAt,
    bytes: bytes.byteLength,
    sha256: await sha256Hex(bytes),
  };
  return { info, bytes };
}

/** The data dir as a store: the one newest checkpoint the shard keeps there. */
export class DirCheckpointStore implements CheckpointStore {
  readonly kind = 'dir';
  constructor(readonly dir: string) {}

  async list(): Promise<StoredCheckpoint[]> {
    const out: StoredCheckpoint[] = [];
    for (const segment of listCheckpoints(this.dir).reverse()) {
      try {
        const { info } = await describeLocalCheckpoint(this.dir, segment);
        out.push({ ...info, sha256: '' });
      } catch (e) {
        out.push({
          name: checkpointFileName(segment),
          segment,
          version: 0,
          deltaSeq: 0,
          createdAt: 0,
          bytes: 0,
          sha256: '',
          problem: (e as Error).message,
        });
      }
    }
    return out;
  }

  async read(c: StoredCheckpoint): Promise<Uint8Array> {
    const buf = await readFile(join(this.dir, c.name));
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    await verifyCheckpoint(c, bytes);
    return bytes;
  }

  async put(dir: string, segment: number): Promise<StoredCheckpoint> {
    if (dir !== this.dir) throw new FreshetError('CONFIG', `a dir store holds ${this.dir} only, not ${dir}`);
    return { ...(await describeLocalCheckpoint(dir, segment)).info, sha256: '' };
  }
}

/** Present while a restore from a store writes into the data dir (see {@link restoreFromStore}). */
export const RESTORE_MARKER = 'restore-from-store.pending';
const STATE_FILE = /^(checkpoint-\d{10}\.ckpt|wal-\d{10}\.log)(\.tmp)?$/;

/**
 * True when `dir` holds neither a checkpoint nor a log segment: a shard starting from nothing.
 * What a restore from a store left half written (killed meanwhile: its marker is still there) is
 * removed first, so that restore starts again instead of a part of it passing for the state.
 */
export async function isFreshDataDir(dir: string): Promise<boolean> {
  if (existsSync(join(dir, RESTORE_MARKER))) {
    for (const f of readdirSync(dir)) if (STATE_FILE.test(f)) await rm(join(dir, f), { force: true });
    await rm(join(dir, RESTORE_MARKER), { force: true });
  }
  return !readdirSync(dir).some((f) => STATE_FILE.test(f) && !f.endsWith('.tmp'));
}

const codeOf = (e: unknown): ErrorCode => (e instanceof FreshetError ? e.code : 'UNAVAILABLE');

/** What {@link restoreFromStore} put into the data dir. */
export interface FetchedFromStore {
  /** The checkpoint, or undefined when the store had only log segments from the first one on. */
  checkpoint: StoredCheckpoint | undefined;
  /** Log segments after it, installed as the data dir's log (replayed by the usual restore). */
  segments: number;
  /** The shard's version at the end of the last of them (the checkpoint's without any). */
  version: number;
}

/**
 * Restores the newest usable checkpoint of `store` into `dir` (which must be fresh, see
 * {@link isFreshDataDir}): tries each, newest first; one that fails verification is refused
 * with a warning (code BAD_FRAME) and the next-newest is tried. Then the mirrored log segments
 * after it, consecutive from the next one, become the data dir's log; the first gap or bad
 * segment ends them (a warning), since each later one builds on it. Returns undefined when the
 * store has nothing for this shard. When it has checkpoints and none is usable, throws
 * BAD_FRAME listing why: starting from an empty model would silently throw the trained one away.
 */
export async function restoreFromStore(
  store: CheckpointStore,
  dir: string,
  fsync: boolean,
  log: ActorLog,
): Promise<FetchedFromStore | undefined> {
  const all = await store.list();
  const mirrored = (await store.listSegments?.()) ?? [];
  if (all.length === 0 && mirrored.length === 0) return undefined;
  // the files below are the state only once all are there: until then a marker says they are not
  await installFile(dir, RESTORE_MARKER, new Uint8Array(0), fsync);
  const problems: string[] = [];
  let checkpoint: StoredCheckpoint | undefined;
  for (const c of all) {
    try {
      const bytes = await store.read(c);
      await installCheckpoint(dir, c.segment, bytes, fsync);
      checkpoint = c;
      break;
    } catch (e) {
      if (!hasCode(e, 'BAD_FRAME', 'CONFIG')) throw e;
      problems.push((e as Error).message);
      log('warn', 'checkpoint refused; trying the next-newest', {
        code: codeOf(e),
        error: (e as Error).message,
      });
    }
  }
  if (all.length > 0 && !checkpoint) {
    throw new FreshetError(
      'BAD_FRAME',
      `no usable checkpoint among ${all.length} in the ${store.kind} store: ${problems.join('; ')} ` +
        '(delete the bad objects to start this shard empty)',
    );
  }
  // without any checkpoint the log must start at the first segment ever written
  let next = (checkpoint?.segment ?? 0) + 1;
  let version = checkpoint?.version ?? 0;
  let segments = 0;
  for (const s of mirrored) {
    if (s.segment < next) continue;
    if (s.segment > next) {
      log('warn', 'log segments in the store stop at a gap; restoring up to it', {
        code: 'BAD_FRAME',
        missing: next,
        found: s.segment,
      });
      break;
    }
    try {
      await installFile(dir, walSegmentFileName(s.segment), await store.readSegment!(s), fsync);
    } catch (e) {
      if (!hasCode(e, 'BAD_FRAME')) throw e;
      log('warn', 'log segment refused; restoring up to it', {
        code: codeOf(e),
        error: (e as Error).message,
      });
      break;
    }
    segments++;
    version = s.version;
    next++;
  }
  await rm(join(dir, RESTORE_MARKER));
  if (fsync) await syncDir(dir);
  if (!checkpoint && segments === 0) return undefined;
  return { checkpoint, segments, version };
}

/** Progress of a {@link CheckpointUploader}, for status and tests. */
export interface UploadStats {
  uploads: number;
  failures: number;
  /** Segment of the newest checkpoint in the store, uploaded or found there. */
  segment: number | null;
  lastMs: number;
  lastBytes: number;
  lastError: string | null;
  /** Log segments mirrored, and the newest of them. */
  segmentUploads: number;
  walSegment: number | null;
}

/**
 * Uploads the data dir's newest checkpoint to a store in the background, one upload at a time.
 * `schedule()` after each local checkpoint; a checkpoint written while an upload runs is taken
 * next (an older one it replaced is skipped). A failure logs a warning with a code and leaves
 * the next `schedule()` to try again with the then newest checkpoint; nothing here is awaited
 * by the push path. `flush()` (a drain's last step) waits for everything scheduled and throws
 * if the newest checkpoint is not in the store.
 */
export class CheckpointUploader {
  readonly stats: UploadStats = {
    uploads: 0,
    failures: 0,
    segment: null,
    lastMs: 0,
    lastBytes: 0,
    lastError: null,
    segmentUploads: 0,
    walSegment: null,
  };
  private running: Promise<void> | undefined;
  private again = false;
  /** Sealed log segments waiting for their upload → the version at their end. */
  private readonly sealedSegments = new Map<number, number>();

  /** `segments`: mirror sealed log segments too (where the store keeps them). */
  constructor(
    private readonly store: CheckpointStore,
    private readonly dir: string,
    private readonly log: ActorLog,
    private readonly segments = false,
  ) {}

  /** Uploads the newest local checkpoint unless the store has it (background; never rejects). */
  schedule(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.loop().finally(() => (this.running = undefined));
  }

  /** Queues sealed log segment `segment` (ending at `version`) and starts uploading. */
  sealed(segment: number, version: number): void {
    if (!this.store.putSegment || !this.segments) return;
    this.sealedSegments.set(segment, version);
    this.schedule();
  }

  /** Marks `segment` as in the store already (restored from it). */
  have(segment: number): void {
    this.stats.segment = Math.max(this.stats.segment ?? 0, segment);
  }

  /** Waits for scheduled uploads; throws when the newest local checkpoint did not get there. */
  async flush(): Promise<void> {
    while (this.running) await this.running;
    const newest = listCheckpoints(this.dir).pop();
    if (newest !== undefined && (this.stats.segment ?? -1) < newest) {
      throw new FreshetError(
        'UNAVAILABLE',
        `checkpoint ${newest} is not in the ${this.store.kind} store: ${this.stats.lastError ?? 'not uploaded'}`,
      );
    }
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      await this.uploadCheckpoint();
      await this.uploadSegments();
    } while (this.again);
  }

  private async uploadCheckpoint(): Promise<void> {
    const segment = listCheckpoints(this.dir).pop();
    if (segment === undefined || (this.stats.segment ?? -1) >= segment) return;
    const t0 = performance.now();
    try {
      const info = await this.store.put(this.dir, segment);
      this.stats.uploads++;
      this.stats.segment = segment;
      this.stats.lastMs = Math.round(performance.now() - t0);
      this.stats.lastBytes = info.bytes;
      this.stats.lastError = null;
    } catch (e) {
      // deleted by a newer checkpoint meanwhile: that one is uploaded next
      if (
        (e as NodeJS.ErrnoException).code === 'ENOENT' &&
        (listCheckpoints(this.dir).pop() ?? 0) > segment
      ) {
        this.again = true;
        return;
      }
      this.stats.failures++;
      this.stats.lastError = (e as Error).message;
      this.log('warn', 'checkpoint upload failed; retried at the next checkpoint', {
        code: codeOf(e),
        segment,
        error: (e as Error).message,
      });
    }
  }

  /** Sealed segments in order; a failure holds the later ones (a restore needs them consecutive). */
  private async uploadSegments(): Promise<void> {
    for (const [segment, version] of [...this.sealedSegments].sort((a, b) => a[0] - b[0])) {
      // covered by an uploaded checkpoint
      if (segment <= (this.stats.segment ?? 0)) {
        this.sealedSegments.delete(segment);
        continue;
      }
      try {
        await this.store.putSegment!(this.dir, segment, version);
        this.sealedSegments.delete(segment);
        this.stats.segmentUploads++;
        this.stats.walSegment = segment;
      } catch (e) {
        // truncated under a newer local checkpoint, whose upload covers it
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
          this.sealedSegments.delete(segment);
          continue;
        }
        this.stats.failures++;
        this.stats.lastError = (e as Error).message;
        this.log('warn', 'log segment upload failed; retried with the next one', {
          code: codeOf(e),
          segment,
          error: (e as Error).message,
        });
        return;
      }
    }
  }
}
