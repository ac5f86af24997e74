import { createHash } from 'node:crypto';
import type { NatsConnection } from 'nats';
import { requestBytes } from '@freshet/nats';
import {
  decodePullReply,
  decodePushReply,
  encodePull,
  encodePush,
  FreshetError,
  shardOfDense,
  shardOfKey,
  subjects,
  type ModelSpec,
  type PullReply,
  type PullRequest,
  type PushReply,
  type PushRequest,
  type PullTable,
  type PushTable,
} from '@freshet/protocol';
import { aligned } from '@freshet/shard';
import { resolveWarmStart, type ResolvedTable, type WarmStartFile } from './warm-start-file.js';

/**
 * Imports a warm-start file into running shards (docs/warm-start.md). Each shard's share of the
 * rows is cut into fixed chunks; per chunk the importer pulls the rows as they are, and pushes
 * the difference to the file's values as an additive push (`add: true`): logged, checkpointed
 * and published as a delta like any push, and concurrent training is kept rather than
 * overwritten. float32 `w + (v − w)` can miss `v` by an ulp, so it pulls again and pushes the
 * residual until every row reads back bit for bit (a few rounds at most; rows training moves
 * meanwhile are left as they are: file value plus that training, counted). Push ids are `<id>.r<round>.s<shard>.c<chunk>`
 * with `<id>` from the file's digest: a retried import is answered `duplicate` where it was
 * applied, and applied where it was not.
 */

/** How the import reaches shard n: NATS request-reply, or a {@link ShardCore} in the bench. */
export interface ShardLink {
  pull(shard: number, req: PullRequest): Promise<PullReply>;
  push(shard: number, req: PushRequest): Promise<PushReply>;
}

/** The shards of `cluster` over NATS. */
export function natsShardLink(
  nc: NatsConnection,
  cluster: string,
  o: { timeoutMs?: number; signal?: AbortSignal } = {},
): ShardLink {
  const s = subjects(cluster);
  const req = { timeoutMs: o.timeoutMs ?? 30_000, signal: o.signal };
  return {
    pull: async (sh, r) => decodePullReply(aligned(await requestBytes(nc, s.pull(sh), encodePull(r), req))),
    push: async (sh, r) => decodePushReply(aligned(await requestBytes(nc, s.push(sh), encodePush(r), req))),
  };
}

export interface ImportOptions {
  /** Shard count (default: what the running shards report). */
  shards: number;
  /** The import's id (default: `import-` + the file's sha256 prefix). */
  id?: string;
  /** Rows per pull/push (default 4096; under the shards' maxPullKeys and maxPushRows). */
  chunkRows?: number;
  /** Correction rounds after the first (default 4). */
  maxRounds?: number;
  allowMissing?: boolean;
}

export interface ImportReport {
  id: string;
  model: string;
  shards: number;
  /** Rows per table in the file. */
  rows: Record<string, number>;
  missing: string[];
  /** Rounds run (the last one found nothing to change, unless `differing` > 0). */
  rounds: number;
  pushes: number;
  /** Pushes the shards had applied already (a retried import). */
  duplicates: number;
  /** Rows pushed per round. */
  pushedRows: number[];
  /** Rows that still read back different by rounding after the last round (0: bit for bit). */
  differing: number;
  /**
   * Rows training moved while the import ran: after the first push they read back further from
   * the file than rounding explains, and are left alone (file value plus that training).
   */
  moved: number;
}

/** A warm-start's rows that live on one shard, in fixed chunks (stable across retries). */
interface Chunk {
  tables: {
    r: ResolvedTable;
    keys: Uint32Array;
    values: Float32Array;
    dim: number;
    /** Per row: the largest |value| of the file's and the first pull's (what rounding scales with). */
    scale?: Float32Array;
  }[];
  rows: number;
}

/**
 * How far from the file, relative to the row's scale, a row may read after a push for the gap to
 * be float32 rounding (a few ulps: 2^-23 each) rather than a training step.
 */
const ROUNDING = 2 ** -18;

export function importDigest(bytes: Uint8Array): string {
  return `import-${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}`;
}

function chunksOf(
  tables: ResolvedTable[],
  spec: ModelSpec,
  shard: number,
  shards: number,
  size: number,
): Chunk[] {
  const chunks: Chunk[] = [];
  let cur: Chunk = { tables: [], rows: 0 };
  const flush = () => {
    if (cur.rows > 0) chunks.push(cur);
    cur = { tables: [], rows: 0 };
  };
  for (const r of tables) {
    const dim = spec.tables[r.t]!.dim;
    if (r.table.kind === 'dense') {
      if (shardOfDense(spec.tables[r.t]!, shards) !== shard) continue;
      if (cur.rows + 1 > size) flush();
      cur.tables.push({ r, keys: new Uint32Array(2), values: r.table.values, dim });
      cur.rows++;
      continue;
    }
    const { keys, values } = r.table;
    const mine: number[] = [];
    for (let i = 0; i < keys.length / 2; i++)
      if (shardOfKey(r.t, keys[2 * i]!, keys[2 * i + 1]!, shards) === shard) mine.push(i);
    for (let from = 0; from < mine.length;) {
      const room = size - cur.rows;
      if (room === 0) {
        flush();
        continue;
      }
      const take = mine.slice(from, from + room);
      const k = new Uint32Array(take.length * 2);
      const v = new Float32Array(take.length * dim);
      take.forEach((i, j) => {
        k[2 * j] = keys[2 * i]!;
        k[2 * j + 1] = keys[2 * i + 1]!;
        v.set(values.subarray(i * dim, (i + 1) * dim), j * dim);
      });
      cur.tables.push({ r, keys: k, values: v, dim });
      cur.rows += take.length;
      from += take.length;
    }
  }
  flush();
  return chunks;
}

/** Imports `file` into the shards behind `link` serving `spec` (see the module comment). */
export async function importWarmStart(
  link: ShardLink,
  spec: ModelSpec,
  file: WarmStartFile,
  digest: string,
  o: ImportOptions,
): Promise<ImportReport> {
  const { tables, missing } = resolveWarmStart(file, spec, o.allowMissing);
  const id = o.id ?? digest;
  const size = o.chunkRows ?? 4096;
  const maxRounds = o.maxRounds ?? 4;
  const report: ImportReport = {
    id,
    model: spec.name,
    shards: o.shards,
    rows: Object.fromEntries(
      tables.map((r) => [r.name, r.table.kind === 'dense' ? 1 : r.table.keys.length / 2]),
    ),
    missing,
    rounds: 0,
    pushes: 0,
    duplicates: 0,
    pushedRows: [],
    differing: 0,
    moved: 0,
  };
  const perShard = Array.from({ length: o.shards }, (_, sh) => chunksOf(tables, spec, sh, o.shards, size));
  for (let round = 0; round <= maxRounds; round++) {
    let pushed = 0;
    let differing = 0;
    let moved = 0;
    for (let sh = 0; sh < o.shards; sh++) {
      for (const [c, chunk] of perShard[sh]!.entries()) {
        const pullTables: PullTable[] = chunk.tables.map((x) => ({ t: x.r.t, keys: x.keys }));
        const reply = await link.pull(sh, { worker: 'import', tables: pullTables });
        const push: PushTable[] = [];
        chunk.tables.forEach((x, i) => {
          const now = reply.tables[i]!.values;
          const n = x.keys.length / 2;
          const rows: number[] = [];
          if (round === 0) {
            x.scale = new Float32Array(n);
            for (let j = 0; j < n; j++) {
              let m = 1;
              for (let k = 0; k < x.dim; k++)
                m = Math.max(m, Math.abs(now[j * x.dim + k]!), Math.abs(x.values[j * x.dim + k]!));
              x.scale[j] = m;
            }
          }
          for (let j = 0; j < n; j++) {
            let differs = false;
            let far = false;
            for (let k = 0; k < x.dim; k++) {
              const v = x.values[j * x.dim + k]!;
              const w = now[j * x.dim + k]!;
              // bit for bit: -0 and 0 differ too
              if (Object.is(w, v)) continue;
              differs = true;
              if (Math.abs(v - w) > ROUNDING * x.scale![j]!) far = true;
            }
            if (!differs) continue;
            // after the first push a row far from the file was moved by training: keep that
            if (round > 0 && far) moved++;
            else rows.push(j);
          }
          if (rows.length === 0) return;
          const keys = new Uint32Array(rows.length * 2);
          const grads = new Float32Array(rows.length * x.dim);
          rows.forEach((j, m) => {
            keys[2 * m] = x.keys[2 * j]!;
            keys[2 * m + 1] = x.keys[2 * j + 1]!;
            for (let k = 0; k < x.dim; k++)
              grads[m * x.dim + k] = x.values[j * x.dim + k]! - now[j * x.dim + k]!;
          });
          // a count at the table's admission threshold creates the row on the first push
          const minCount = Math.max(1, spec.tables[x.r.t]!.minCount);
          push.push({
            t: x.r.t,
            dim: x.dim,
            keys,
            grads,
            counts: new Uint32Array(rows.length).fill(minCount),
          });
        });
        const rows = push.reduce((a, p) => a + p.keys.length / 2, 0);
        if (rows === 0) continue;
        if (round === maxRounds) {
          differing += rows;
          continue;
        }
        const r = await link.push(sh, {
          id: `${id}.r${round}.s${sh}.c${c}`,
          worker: 'import',
          clock: 0,
          base: reply.version,
          add: true,
          tables: push,
        });
        report.pushes++;
        if (r.duplicate) report.duplicates++;
        pushed += rows;
      }
    }
    report.rounds = round + 1;
    report.moved = moved;
    if (round === maxRounds) report.differing = differing;
    else report.pushedRows.push(pushed);
    if (pushed === 0 && round < maxRounds) break;
  }
  return report;
}

/** The shard count the running shards of `cluster` agree on. */
export function agreedShardCount(statuses: Record<string, unknown>[], cluster: string): number {
  const counts = new Set(statuses.map((st) => st.shards).filter((x): x is number => typeof x === 'number'));
  if (counts.size === 0)
    throw new FreshetError('UNAVAILABLE', `no shard running in cluster "${cluster}": start the shards first`);
  if (counts.size > 1)
    throw new FreshetError(
      'CONFIG',
      `shards of cluster "${cluster}" disagree on the shard count (${[...counts].join(', ')}): pass --shards`,
    );
  return [...counts][0]!;
}
