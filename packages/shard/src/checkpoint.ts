import { readdirSync } from 'node:fs';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FreshetError } from '@freshet/protocol';
import type { ShardCore } from './shard-core.js';
import { syncDir } from './wal.js';

/**
 * Checkpoints: the whole shard state (rows with optimizer state, step counts and last-seen
 * times, admission sketches, unpublished delta state, recent push ids, version, delta seq) as
 * of the end of WAL segment `segment`, in `checkpoint-<segment>.ckpt`.
 *
 * Taken in steps: {@link beginCheckpoint} right when the log rotates (copy-on-write snapshot of
 * the row slabs, no pause), `complete()` to finish the copy in the background, then
 * {@link writeCheckpoint} writes it to a temporary file and renames it into place, so a crash
 * mid-write leaves the previous checkpoint intact. Restore = newest checkpoint + replay of the
 * segments after it.
 *
 * File: [u32 magic][u32 header bytes][JSON header, padded to 4][sections as raw u32/u16 words].
 */

const MAGIC = 0x314b4346; // 'FCK1'

interface TableHeader {
  id: number;
  name: string;
  dim: number;
  stride: number;
  chunkRows: number;
  end: number;
  words: number;
  sketchWords: number;
  dirty: number;
  dead: number;
  /** The table's push count (Adam's table-mode bias correction); absent in older files. */
  steps?: number;
}
/** The JSON header of a checkpoint file. */
export interface CheckpointHeader {
  segment: number;
  version: number;
  deltaSeq: number;
  createdAt: number;
  recent: [string, number][];
  tables: TableHeader[];
}

/** A consistent copy of the shard state, ready to be written in the background. */
export interface CheckpointCapture {
  header: CheckpointHeader;
  sections: Uint8Array[];
  bytes: number;
}

const bytesOf = (a: Uint32Array | Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** A checkpoint whose row slabs are still being copied (copy-on-write, in the background). */
export interface PendingCheckpoint {
  /** Finishes the copy, yielding to the event loop between batches of chunks. */
  complete(): Promise<CheckpointCapture>;
}

/**
 * Captures the state of `core` as of WAL segment `segment`: the small parts (version, push ids,
 * sketches, pending delta state) are copied now; row slabs are snapshotted copy-on-write, so
 * the call returns in microseconds whatever the table size, and pushes keep flowing while
 * {@link PendingCheckpoint.complete} copies the untouched chunks.
 */
export function beginCheckpoint(core: ShardCore, segment: number, deltaSeq: number): PendingCheckpoint {
  const parts = core.tables.map((tab) => {
    tab.store.beginSnapshot();
    return {
      tab,
      sketch: tab.sketch ? tab.sketch.counts.slice() : new Uint16Array(0),
      pending: tab.pendingState(),
      steps: tab.steps,
    };
  });
  const version = core.version;
  const recent = core.recentIds();
  const createdAt = Date.now();
  return {
    async complete() {
      const sections: Uint8Array[] = [];
      const tables: TableHeader[] = [];
      for (const { tab, sketch, pending, steps } of parts) {
        const s = tab.store;
        let snap: { chunks: Uint32Array[]; end: number } | undefined;
        // ~8 MB per turn keeps each pause short for pushes interleaved with the copy.
        const perTurn = Math.max(1, Math.floor((8 << 20) / ((s.chunkMask + 1) * s.stride * 4)));
        while (!(snap = s.snapshotStep(perTurn))) await new Promise((r) => setImmediate(r));
        const rowsWords = snap.end * s.stride;
        let words = 0;
        for (const c of snap.chunks) {
          const take = Math.min(c.length, rowsWords - words);
          sections.push(bytesOf(c.subarray(0, take)));
          words += take;
        }
        const sketchBytes = bytesOf(sketch);
        sections.push(sketchBytes);
        if (sketchBytes.byteLength & 3) sections.push(new Uint8Array(4 - (sketchBytes.byteLength & 3)));
        sections.push(bytesOf(pending.dirty), bytesOf(pending.dead));
        tables.push({
          id: tab.id,
          name: tab.spec.name,
          dim: tab.dim,
          stride: s.stride,
          chunkRows: s.chunkMask + 1,
          end: snap.end,
          words,
          sketchWords: sketch.length,
          dirty: pending.dirty.length,
          dead: pending.dead.length,
          steps,
        });
      }
      const header: CheckpointHeader = { segment, version, deltaSeq, createdAt, recent, tables };
      return { header, sections, bytes: sections.reduce((n, x) => n + x.byteLength, 0) };
    },
  };
}

/** Captures the state of `core` now, copying everything before returning (tests, tools). */
export function captureCheckpoint(
  core: ShardCore,
  segment: number,
  deltaSeq: number,
): Promise<CheckpointCapture> {
  return beginCheckpoint(core, segment, deltaSeq).complete();
}

/** The file name of the checkpoint as of the end of WAL segment `segment`. */
export const checkpointFileName = (segment: number) => `checkpoint-${String(segment).padStart(10, '0')}.ckpt`;
const ckptName = checkpointFileName;

/** Segments of the checkpoints in `dir`, ascending. */
export function listCheckpoints(dir: string): number[] {
  return readdirSync(dir)
    .map((f) => /^checkpoint-(\d{10})\.ckpt$/.exec(f)?.[1])
    .filter((x): x is string => x !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

/**
 * Writes a capture atomically (tmp + rename; fsync of file and directory with `fsync`), then
 * deletes older checkpoints. Returns the file size.
 */
export async function writeCheckpoint(dir: string, cap: CheckpointCapture, fsync: boolean): Promise<number> {
  const json = new TextEncoder().encode(JSON.stringify(cap.header));
  const pad = (4 - ((8 + json.byteLength) & 3)) & 3;
  const prefix = new Uint8Array(8 + json.byteLength + pad);
  const dv = new DataView(prefix.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, json.byteLength, true);
  prefix.set(json, 8);
  const final = join(dir, ckptName(cap.header.segment));
  const tmp = `${final}.tmp`;
  // the model's parameters: readable by the shard's user only (a leftover tmp keeps its mode
  // through 'w', hence the chmod)
  const fh = await open(tmp, 'w', 0o600);
  await fh.chmod(0o600);
  let size = 0;
  try {
    const all = [prefix, ...cap.sections];
    // writev in groups keeps the iovec count under the OS limit.
    for (let i = 0; i < all.length; i += 512) {
      let group = all.slice(i, i + 512);
      while (group.length > 0) {
        const { bytesWritten } = await fh.writev(group);
        size += bytesWritten;
        let skip = bytesWritten;
        const rest: Uint8Array[] = [];
        for (const x of group) {
          if (skip >= x.byteLength) skip -= x.byteLength;
          else {
            rest.push(skip > 0 ? x.subarray(skip) : x);
            skip = 0;
          }
        }
        group = rest;
      }
    }
    if (fsync) await fh.datasync();
  } finally {
    await fh.close();
  }
  await rename(tmp, final);
  if (fsync) await syncDir(dir);
  for (const s of listCheckpoints(dir)) {
    if (s < cap.header.segment) await rm(join(dir, ckptName(s)), { force: true });
  }
  return size;
}

const pad4 = (n: number) => (4 - (n & 3)) & 3;

/** Body bytes a header promises: per table rows, sketch (padded to 4), dirty and dead lists. */
function bodyBytes(h: CheckpointHeader): number {
  let n = 0;
  for (const t of h.tables)
    n += t.words * 4 + t.sketchWords * 2 + pad4(t.sketchWords * 2) + (t.dirty + t.dead) * 4;
  return n;
}

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0;

/**
 * Checks a checkpoint's bytes before anything of it is used: magic, a header that parses and
 * names non-negative counts, and a length equal to what the header promises (a truncated or
 * padded object fails here). A checksum, where there is one, is the store's to check
 * (checkpoint-store.ts). Throws BAD_FRAME naming `what`.
 */
export function parseCheckpoint(
  u8: Uint8Array,
  what: string,
): { header: CheckpointHeader; bodyOffset: number } {
  const bad = (why: string) => new FreshetError('BAD_FRAME', `checkpoint ${what}: ${why}`);
  if (u8.byteLength < 8) throw bad(`${u8.byteLength} bytes, shorter than the prefix`);
  const dv = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) throw bad('bad magic (not a Freshet checkpoint)');
  const hlen = dv.getUint32(4, true);
  if (8 + hlen > u8.byteLength)
    throw bad(`header of ${hlen} bytes runs past the end (${u8.byteLength} bytes)`);
  let header: CheckpointHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(u8.subarray(8, 8 + hlen))) as CheckpointHeader;
  } catch (e) {
    throw bad(`header is not JSON (${(e as Error).message})`);
  }
  const counts = ['words', 'sketchWords', 'dirty', 'dead', 'stride', 'chunkRows', 'end'] as const;
  if (
    !isCount(header?.segment) ||
    !isCount(header.version) ||
    !isCount(header.deltaSeq) ||
    !Array.isArray(header.tables) ||
    !Array.isArray(header.recent) ||
    header.tables.some((t) => counts.some((k) => !isCount(t?.[k])) || t.words !== t.end * t.stride)
  ) {
    throw bad('header fields missing or not non-negative integers');
  }
  const bodyOffset = 8 + hlen + pad4(8 + hlen);
  const want = bodyOffset + bodyBytes(header);
  if (want !== u8.byteLength) throw bad(`${u8.byteLength} bytes, the header describes ${want}`);
  return { header, bodyOffset };
}

/**
 * Puts checkpoint bytes fetched elsewhere (the Object Store) into `dir` as its checkpoint for
 * `segment`, atomically (tmp + rename, fsync with `fsync`). The caller has verified them.
 */
export function installCheckpoint(
  dir: string,
  segment: number,
  bytes: Uint8Array,
  fsync: boolean,
): Promise<void> {
  return installFile(dir, ckptName(segment), bytes, fsync);
}

/** Writes `bytes` as `dir/name` atomically (tmp + rename, fsync with `fsync`), mode 0600. */
export async function installFile(
  dir: string,
  name: string,
  bytes: Uint8Array,
  fsync: boolean,
): Promise<void> {
  const final = join(dir, name);
  const tmp = `${final}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.chmod(0o600);
    let off = 0;
    while (off < bytes.byteLength) off += (await fh.write(bytes, off)).bytesWritten;
    if (fsync) await fh.datasync();
  } finally {
    await fh.close();
  }
  await rename(tmp, final);
  if (fsync) await syncDir(dir);
}

/** What a restore recovered from the checkpoint (before the log replay). */
export interface RestoredCheckpoint {
  segment: number;
  version: number;
  deltaSeq: number;
  createdAt: number;
  bytes: number;
}

/**
 * Loads the newest checkpoint of `dir` into `core` (which must be freshly built from the same
 * model spec). Returns undefined when there is none. A spec mismatch is a CONFIG error.
 */
export async function loadCheckpoint(dir: string, core: ShardCore): Promise<RestoredCheckpoint | undefined> {
  const latest = listCheckpoints(dir).pop();
  if (latest === undefined) return undefined;
  const buf = await readFile(join(dir, ckptName(latest)));
  const u8 = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  const { header, bodyOffset } = parseCheckpoint(u8, ckptName(latest));
  // One aligned copy: typed-array views below need 4-byte alignment.
  const words = u8.slice(bodyOffset);
  let off = 0;
  const take32 = (n: number) => {
    const a = new Uint32Array(words.buffer, off, n);
    off += n * 4;
    return a;
  };
  for (const th of header.tables) {
    const tab = core.tables[th.id];
    if (!tab || tab.spec.name !== th.name || tab.dim !== th.dim || tab.store.stride !== th.stride) {
      throw new FreshetError(
        'CONFIG',
        `checkpoint table ${th.id} (${th.name}, dim ${th.dim}) does not match the model spec; ` +
          'use a new data dir for a changed model',
      );
    }
    const all = take32(th.words);
    const chunkWords = th.chunkRows * th.stride;
    const chunks: Uint32Array[] = [];
    for (let w = 0; w < all.length; w += chunkWords) chunks.push(all.subarray(w, w + chunkWords));
    tab.store.restore(chunks, th.end);
    const sketchBytes = th.sketchWords * 2;
    if (th.sketchWords > 0 && tab.sketch)
      tab.sketch.counts.set(new Uint16Array(words.buffer, off, th.sketchWords));
    off += sketchBytes + ((4 - (sketchBytes & 3)) & 3);
    const dirty = take32(th.dirty);
    const dead = take32(th.dead);
    tab.restorePending(dirty, dead);
    // An older checkpoint has no count: the most-updated row's is the closest lower bound.
    tab.steps = th.steps ?? tab.store.maxStep();
  }
  core.version = header.version;
  core.restoreRecent(header.recent);
  return {
    segment: header.segment,
    version: header.version,
    deltaSeq: header.deltaSeq,
    createdAt: header.createdAt,
    bytes: buf.byteLength,
  };
}
