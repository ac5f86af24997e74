import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FreshetError, hasCode, type ErrorCode } from '@freshet/protocol';
import type { ActorLog } from '@freshet/nats';
import { checkpointFileName, installCheckpoint, listCheckpoints, parseCheckpoint } from './checkpoint.js';

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

/** True when `dir` holds neither a checkpoint nor a log segment: a shard starting from nothing. */
export function isFreshDataDir(dir: string): boolean {
  return !readdirSync(dir).some((f) => /^(checkpoint-\d{10}\.ckpt|wal-\d{10}\.log)$/.test(f));
}

const codeOf = (e: unknown): ErrorCode => (e instanceof FreshetError ? e.code : 'UNAVAILABLE');

/**
 * Restores the newest usable checkpoint of `store` into `dir` (which must be fresh, see
 * {@link isFreshDataDir}): tries each, newest first; one that fails verification is refused
 * with a warning (code BAD_FRAME) and the next-newest is tried. Returns what was installed, or
 * undefined when the store has none. When it has some and none is usable, throws BAD_FRAME
 * listing why: starting from an empty model would silently throw the trained one away.
 */
export async function restoreFromStore(
  store: CheckpointStore,
  dir: string,
  fsync: boolean,
  log: ActorLog,
): Promise<StoredCheckpoint | undefined> {
  const all = await store.list();
  const problems: string[] = [];
  for (const c of all) {
    try {
      const bytes = await store.read(c);
      await installCheckpoint(dir, c.segment, bytes, fsync);
      return c;
    } catch (e) {
      if (!hasCode(e, 'BAD_FRAME', 'CONFIG')) throw e;
      problems.push((e as Error).message);
      log('warn', 'checkpoint refused; trying the next-newest', {
        code: codeOf(e),
        error: (e as Error).message,
      });
    }
  }
  if (all.length === 0) return undefined;
  throw new FreshetError(
    'BAD_FRAME',
    `no usable checkpoint among ${all.length} in the ${store.kind} store: ${problems.join('; ')} ` +
      '(delete the bad objects to start this shard empty)',
  );
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
  };
  private running: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly store: CheckpointStore,
    private readonly dir: string,
    private readonly log: ActorLog,
  ) {}

  /** Uploads the newest local checkpoint unless the store has it (background; never rejects). */
  schedule(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.loop().finally(() => (this.running = undefined));
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
      const segment = listCheckpoints(this.dir).pop();
      if (segment === undefined || (this.stats.segment ?? -1) >= segment) continue;
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
          continue;
        }
        this.stats.failures++;
        this.stats.lastError = (e as Error).message;
        this.log('warn', 'checkpoint upload failed; retried at the next checkpoint', {
          code: codeOf(e),
          segment,
          error: (e as Error).message,
        });
      }
    } while (this.again);
  }
}
