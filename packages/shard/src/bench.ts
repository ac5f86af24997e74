import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseModelSpec, type PushRequest } from '@freshet/protocol';
import { ShardCore } from './shard-core.js';

/** Options of {@link runShardBench}. */
export interface ShardBenchOptions {
  /** Rows in the table (default 2^20, the PyTorch peer's table size). */
  rows?: number;
  dim?: number;
  /** Rows per push (default 8192). */
  batch?: number;
  /** Measured seconds (default 3). */
  seconds?: number;
  /** Repository root, to find ../shared/peers (default: the current directory). */
  repoRoot?: string;
  /** Run the PyTorch SparseAdam peer when present (default true). */
  peer?: boolean;
}

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

/**
 * In-process shard benchmark: Adam, dim 16, one table of `rows` rows, pushes of `batch` random
 * existing rows (unique within a push), one thread. Measures the whole apply path (validation,
 * key lookup, Adam) and the store's bytes per row from its actual allocations; runs the PyTorch
 * SparseAdam peer on the same machine when it is there. Returns one JSON-able object.
 */
export async function runShardBench(opts: ShardBenchOptions = {}): Promise<Record<string, unknown>> {
  const rows = opts.rows ?? 1 << 20;
  const dim = opts.dim ?? 16;
  const batch = opts.batch ?? 8192;
  const seconds = opts.seconds ?? 3;
  const spec = parseModelSpec({
    name: 'bench',
    tables: [{ name: 'emb', dim, optimizer: { kind: 'adam', lr: 1e-3 }, staleness: { policy: 'none' } }],
  });
  const core = new ShardCore({
    spec,
    shard: 0,
    shards: 1,
    checkOwnership: false,
    maxPushRows: 1 << 22,
    maxPullKeys: 1 << 22,
    sketchWidth: 1 << 10,
    recentPushIds: 1024,
    dcMaxWorkers: 1,
    dcMaxRowsPerWorker: 1,
  });
  const tab = core.tables[0]!;
  const rand = rng(42);
  const keys = new Uint32Array(rows * 2);
  const t0 = performance.now();
  const now = Date.now();
  for (let i = 0; i < rows; i++) {
    const lo = (rand() * 4294967296) >>> 0;
    const hi = (rand() * 4294967296) >>> 0;
    if (tab.store.find(lo, hi) >= 0) {
      i--;
      continue;
    }
    keys[2 * i] = lo;
    keys[2 * i + 1] = hi;
    tab.create(lo, hi, now);
  }
  const insertPerS = rows / ((performance.now() - t0) / 1000);
  tab.takeChanges(rows); // the bench measures updates, not delta bookkeeping of the fill
  const bytesPerRow = tab.store.bytes / tab.store.size;

  // Pre-built pushes: unique random existing rows, random gradients.
  const nPushes = 16;
  const pushes: PushRequest[] = [];
  const seen = new Uint8Array(rows);
  for (let p = 0; p < nPushes; p++) {
    seen.fill(0);
    const k = new Uint32Array(batch * 2);
    for (let i = 0; i < batch; i++) {
      let r: number;
      do r = Math.floor(rand() * rows);
      while (seen[r]);
      seen[r] = 1;
      k[2 * i] = keys[2 * r]!;
      k[2 * i + 1] = keys[2 * r + 1]!;
    }
    const g = new Float32Array(batch * dim);
    for (let i = 0; i < g.length; i++) g[i] = (rand() - 0.5) * 0.1;
    pushes.push({
      id: `b${p}`,
      worker: 'bench',
      clock: 0,
      base: 0,
      tables: [{ t: 0, dim, keys: k, grads: g, counts: new Uint32Array(batch).fill(1) }],
    });
  }
  // Warm-up, then measure.
  for (let i = 0; i < 8; i++) core.applyPush({ ...pushes[i % nPushes]!, id: `w${i}` }, now);
  let updates = 0;
  let i = 0;
  const start = performance.now();
  const until = start + seconds * 1000;
  while (performance.now() < until) {
    const p = pushes[i % nPushes]!;
    updates += core.applyPush({ ...p, id: `m${i}` }, now).applied;
    i++;
    if ((i & 15) === 0) tab.takeChanges(1 << 30);
  }
  const elapsed = (performance.now() - start) / 1000;
  const rowUpdatesPerS = Math.round(updates / elapsed);

  const out: Record<string, unknown> = {
    bench: 'shard',
    optimizer: 'adam',
    dim,
    rows: tab.store.size,
    batch,
    threads: 1,
    row_updates_per_s: rowUpdatesPerS,
    push_ms: +((elapsed * 1000) / i).toFixed(3),
    bytes_per_row: +bytesPerRow.toFixed(1),
    raw_float_bytes_per_row: dim * 3 * 4,
    row_inserts_per_s: Math.round(insertPerS),
  };
  const script = resolve(opts.repoRoot ?? process.cwd(), '../shared/peers/torch_sparse_adam.py');
  if ((opts.peer ?? true) && existsSync(script) && existsSync('/usr/bin/python3')) {
    try {
      const r = await promisify(execFile)('/usr/bin/python3', [script, String(dim), String(batch)], {
        encoding: 'utf8',
        timeout: 300_000,
      });
      const peer = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { row_updates_per_s?: number };
      if (typeof peer.row_updates_per_s === 'number') {
        out.torch_row_updates_per_s = peer.row_updates_per_s;
        out.vs_torch = +(rowUpdatesPerS / peer.row_updates_per_s).toFixed(2);
      }
    } catch (e) {
      out.torch_error = ((e as { stderr?: string }).stderr ?? (e as Error).message).slice(-300);
    }
  }
  return out;
}
