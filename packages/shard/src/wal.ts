import { readdirSync } from 'node:fs';
import { open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FreshetError } from '@freshet/protocol';

/**
 * Write-ahead log of applied changes, in numbered segments `wal-<n>.log` under the data dir.
 *
 * A push is acknowledged only after its record was handed to the kernel with write(): data in
 * the page cache survives kill -9 of the process (the kernel owns it); only power loss or a
 * kernel crash needs fsync, which is on by default (`fsync`, see shard-options.ts) and costs a
 * disk flush per group. Concurrent appends are group-committed: every append made while a write is in progress
 * goes out in the next single writev (and fsync).
 *
 * Record: [u32 magic][u32 kind][u32 payload bytes][u32 aux][f64 ts][payload, padded to 4].
 * A torn tail (a record cut by a crash mid-write) ends the replay of its segment: it was never
 * acknowledged, since acknowledgement waits for the write to complete.
 */

const MAGIC = 0x314c5746; // 'FWL1'
const HEAD = 24;

/** A logged push (its frame as applied), eviction, or published delta sequence number. */
export type WalRecord =
  | { kind: 'push'; ts: number; tau: number; dcApplied: boolean; payload: Uint8Array }
  | { kind: 'evict'; ts: number; t: number; keys: Uint32Array }
  | { kind: 'seq'; ts: number; seq: number };

const KIND_PUSH = 1;
const KIND_EVICT = 2;
const KIND_SEQ = 3;
const FLAG_DC = 0x100;

function encodeRecord(r: WalRecord): Uint8Array[] {
  const head = new Uint8Array(HEAD);
  const dv = new DataView(head.buffer);
  let payload: Uint8Array;
  let kind: number;
  let aux = 0;
  if (r.kind === 'push') {
    payload = r.payload;
    kind = KIND_PUSH | (r.dcApplied ? FLAG_DC : 0);
    aux = r.tau;
  } else if (r.kind === 'evict') {
    payload = new Uint8Array(r.keys.buffer, r.keys.byteOffset, r.keys.byteLength);
    kind = KIND_EVICT;
    aux = r.t;
  } else {
    payload = new Uint8Array(0);
    kind = KIND_SEQ;
  }
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, kind, true);
  dv.setUint32(8, payload.byteLength, true);
  dv.setUint32(12, aux >>> 0, true);
  dv.setFloat64(16, r.kind === 'seq' ? r.seq : r.ts, true);
  const pad = (4 - (payload.byteLength & 3)) & 3;
  return pad ? [head, payload, new Uint8Array(pad)] : [head, payload];
}

/** Parses the records of one segment; stops at the first torn or foreign record. */
export function decodeSegment(buf: Uint8Array): WalRecord[] {
  const out: WalRecord[] = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let off = 0;
  while (off + HEAD <= buf.byteLength) {
    if (dv.getUint32(off, true) !== MAGIC) break;
    const kind = dv.getUint32(off + 4, true);
    const len = dv.getUint32(off + 8, true);
    const aux = dv.getUint32(off + 12, true);
    const tsOrSeq = dv.getFloat64(off + 16, true);
    const start = off + HEAD;
    if (start + len > buf.byteLength) break;
    // Copy into an aligned buffer: frames and key arrays are read as 4-byte typed arrays.
    const payload = buf.slice(start, start + len);
    const k = kind & 0xff;
    if (k === KIND_PUSH) {
      out.push({ kind: 'push', ts: tsOrSeq, tau: aux, dcApplied: (kind & FLAG_DC) !== 0, payload });
    } else if (k === KIND_EVICT) {
      out.push({ kind: 'evict', ts: tsOrSeq, t: aux, keys: new Uint32Array(payload.buffer, 0, len >>> 2) });
    } else if (k === KIND_SEQ) {
      out.push({ kind: 'seq', ts: 0, seq: tsOrSeq });
    } else break;
    off = start + len + ((4 - (len & 3)) & 3);
  }
  return out;
}

/** fsync of a directory: makes created/renamed entries in it durable (power loss). */
export async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/** The file name of log segment `n`. */
export const walSegmentFileName = (n: number) => `wal-${String(n).padStart(10, '0')}.log`;
const segName = walSegmentFileName;

/** Segment numbers present in a data dir, ascending. */
export function listSegments(dir: string): number[] {
  return readdirSync(dir)
    .map((f) => /^wal-(\d{10})\.log$/.exec(f)?.[1])
    .filter((x): x is string => x !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

interface Batch {
  bufs: Uint8Array[];
  bytes: number;
  waiters: { resolve: () => void; reject: (e: unknown) => void }[];
}

/** Counters of the log, for status and the README's cost numbers. */
export interface WalStats {
  segment: number;
  records: number;
  groupCommits: number;
  bytes: number;
  /** Bytes in the current segment (checkpoint trigger). */
  segmentBytes: number;
}

/** The append side of the log. One writer at a time; appends resolve once durable. */
export class Wal {
  private fh: FileHandle;
  private batch: Batch | undefined;
  private chain: Promise<void> = Promise.resolve();
  private failed: Error | undefined;
  readonly stats: WalStats;

  private constructor(
    readonly dir: string,
    readonly fsync: boolean,
    fh: FileHandle,
    segment: number,
  ) {
    this.fh = fh;
    this.stats = { segment, records: 0, groupCommits: 0, bytes: 0, segmentBytes: 0 };
  }

  /**
   * Opens a fresh segment after the highest existing one (old segments are only replayed) and
   * after `after` (the restored checkpoint's: one fetched from the Object Store has no log).
   */
  static async open(dir: string, fsync: boolean, after = 0): Promise<Wal> {
    const segment = Math.max(listSegments(dir).pop() ?? 0, after) + 1;
    // the log holds every update: readable by its owner only (the data dir is 0700 too)
    const fh = await open(join(dir, segName(segment)), 'wx', 0o600);
    if (fsync) await syncDir(dir);
    return new Wal(dir, fsync, fh, segment);
  }

  /** Appends a record; resolves when it is written (and fsynced with `fsync`). */
  append(r: WalRecord): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const bufs = encodeRecord(r);
    let b = this.batch;
    if (!b) {
      b = this.batch = { bufs: [], bytes: 0, waiters: [] };
      // Appends made in the same turn of the event loop share one write.
      setImmediate(() => this.seal());
    }
    for (const x of bufs) {
      b.bufs.push(x);
      b.bytes += x.byteLength;
    }
    this.stats.records++;
    this.stats.segmentBytes += bufs.reduce((s, x) => s + x.byteLength, 0);
    return new Promise<void>((resolve, reject) => b.waiters.push({ resolve, reject }));
  }

  private seal(): void {
    const b = this.batch;
    if (!b) return;
    this.batch = undefined;
    this.chain = this.chain.then(async () => {
      try {
        if (this.failed) throw this.failed;
        // The handle is read when the write runs: a rotation queued before it has switched it.
        const fh = this.fh;
        let off = 0;
        // writev may write less than asked; loop until the batch is on the file.
        let bufs = b.bufs;
        while (bufs.length > 0) {
          const { bytesWritten } = await fh.writev(bufs);
          off += bytesWritten;
          let skip = bytesWritten;
          const rest: Uint8Array[] = [];
          for (const x of bufs) {
            if (skip >= x.byteLength) skip -= x.byteLength;
            else {
              rest.push(skip > 0 ? x.subarray(skip) : x);
              skip = 0;
            }
          }
          bufs = rest;
        }
        if (this.fsync) await fh.datasync();
        this.stats.groupCommits++;
        this.stats.bytes += off;
        for (const w of b.waiters) w.resolve();
      } catch (e) {
        this.failed ??= new FreshetError('INTERNAL', `write-ahead log failed: ${(e as Error).message}`, {
          cause: e,
        });
        for (const w of b.waiters) w.reject(this.failed);
      }
    });
  }

  /** Resolves when everything appended so far is durable. */
  async flushed(): Promise<void> {
    this.seal();
    await this.chain;
    if (this.failed) throw this.failed;
  }

  /**
   * Starts a new segment. Records appended before the call stay in the sealed one; returns its
   * number and a promise that resolves once it is completely written and closed.
   */
  rotate(): { sealed: number; done: Promise<void> } {
    this.seal();
    const sealed = this.stats.segment;
    const next = sealed + 1;
    this.stats.segment = next;
    this.stats.segmentBytes = 0;
    let closed!: () => void;
    const done = new Promise<void>((r) => (closed = r));
    this.chain = this.chain.then(async () => {
      try {
        const old = this.fh;
        if (this.fsync) await old.datasync();
        await old.close();
        closed();
        this.fh = await open(join(this.dir, segName(next)), 'wx', 0o600);
        // With fsync the new file's directory entry must be durable too, or power loss loses it.
        if (this.fsync) await syncDir(this.dir);
      } catch (e) {
        closed();
        this.failed ??= new FreshetError('INTERNAL', `log rotation failed: ${(e as Error).message}`, {
          cause: e,
        });
      }
    });
    return { sealed, done };
  }

  async close(): Promise<void> {
    await this.flushed();
    await this.fh.close();
  }
}

/** Replays every record of segments after `afterSegment`, in order. */
export async function replayWal(
  dir: string,
  afterSegment: number,
  onRecord: (r: WalRecord, segment: number) => void,
): Promise<{ segments: number; records: number }> {
  let records = 0;
  let segments = 0;
  for (const s of listSegments(dir)) {
    if (s <= afterSegment) continue;
    const buf = await readFile(join(dir, segName(s)));
    const u8 = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    for (const r of decodeSegment(u8)) {
      onRecord(r, s);
      records++;
    }
    segments++;
  }
  return { segments, records };
}

/** Deletes segments ≤ `upTo` (covered by a durable checkpoint). */
export async function truncateWal(dir: string, upTo: number): Promise<number> {
  let n = 0;
  for (const s of listSegments(dir)) {
    if (s > upTo) break;
    await rm(join(dir, segName(s)), { force: true });
    n++;
  }
  return n;
}
