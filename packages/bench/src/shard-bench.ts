import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodePush, parseModelSpec, xorshift32, type PushRequest } from '@freshet/protocol';
import { beginCheckpoint, loadCheckpoint, ShardCore, Wal, writeCheckpoint } from '@freshet/shard';
import { runTorchPeer } from './torch-peer.js';

/** Options of {@link runShardBench}. */
export interface ShardBenchOptions {
  /** Rows in the table (default 2^20, the PyTorch peer's table size). */
  rows?: number;
  dim?: number;
  /** Rows per push (default 8192). */
  batch?: number;
  /** Measured seconds (default 3). */
  seconds?: number;
  /** Run the PyTorch SparseAdam peer, bench/peers/torch_sparse_adam.py (default true). */
  peer?: boolean;
}

/**
 * In-process shard benchmark: Adam, dim 16, one table of `rows` rows, pushes of `batch` random
 * existing rows (unique within a push), one thread. Measures the whole apply path (validation,
 * key lookup, Adam) and the store's bytes per row from its actual allocations; runs the PyTorch
 * SparseAdam peer in the same run: its `SparseAdam.step()` with ready gradients is the same work
 * as `applyPush` (no forward or backward pass on either side). Returns one JSON-able object.
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
  const rand = xorshift32(42);
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
  let seq = 0;
  const measure = (secs: number) => {
    let updates = 0;
    let n = 0;
    const start = performance.now();
    const until = start + secs * 1000;
    while (performance.now() < until) {
      const p = pushes[seq % nPushes]!;
      updates += core.applyPush({ ...p, id: `m${seq++}` }, now).applied;
      n++;
      // What the delta publisher does every few ms (about one push per interval at this rate).
      tab.takeChanges(1 << 30);
    }
    const el = (performance.now() - start) / 1000;
    return { rate: updates / el, pushMs: (el * 1000) / n };
  };
  const first = measure(seconds);

  // Durability costs at this size: checkpoint pause (the synchronous copy), write, restore, log.
  const dir = mkdtempSync(join(tmpdir(), 'freshet-shard-bench-'));
  let durability: Record<string, number> = {};
  try {
    let t = performance.now();
    const pending = beginCheckpoint(core, 1, 0);
    const pauseMs = performance.now() - t;
    // Pushes keep being applied while the copy completes (copy-on-write).
    t = performance.now();
    const completing = pending.complete();
    let during = 0;
    for (let k = 0; k < 8; k++) {
      during += core.applyPush({ ...pushes[k % nPushes]!, id: `c${k}` }, now).applied;
      await new Promise((r) => setImmediate(r));
    }
    const cap = await completing;
    const copyMs = performance.now() - t;
    t = performance.now();
    const bytes = await writeCheckpoint(dir, cap, false);
    const writeMs = performance.now() - t;
    const fresh = new ShardCore(core.o);
    t = performance.now();
    await loadCheckpoint(dir, fresh);
    const restoreMs = performance.now() - t;
    const wal = await Wal.open(dir, false);
    const frames = pushes.map((p) => encodePush(p));
    t = performance.now();
    for (let k = 0; k < 32; k++) {
      await wal.append({
        kind: 'push',
        ts: now,
        tau: 0,
        dcApplied: false,
        payload: frames[k % frames.length]!,
      });
    }
    const walMs = (performance.now() - t) / 32;
    await wal.close();
    durability = {
      checkpoint_pause_ms: +pauseMs.toFixed(2),
      checkpoint_copy_ms: Math.round(copyMs),
      rows_updated_during_copy: during,
      checkpoint_write_ms: Math.round(writeMs),
      checkpoint_mb: +(bytes / 1048576).toFixed(1),
      restore_ms: Math.round(restoreMs),
      wal_append_ms_per_push: +walMs.toFixed(3),
      push_frame_kb: Math.round(frames[0]!.byteLength / 1024),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const out: Record<string, unknown> = {
    bench: 'shard',
    optimizer: 'adam',
    dim,
    rows: tab.store.size,
    batch,
    threads: 1,
    row_updates_per_s: Math.round(first.rate),
    push_ms: +first.pushMs.toFixed(3),
    bytes_per_row: +bytesPerRow.toFixed(1),
    raw_float_bytes_per_row: dim * 3 * 4,
    row_inserts_per_s: Math.round(insertPerS),
    ...durability,
  };
  if (opts.peer ?? true) {
    // The same table size, dim, rows per push and measured seconds.
    const run = await runTorchPeer(
      'torch_sparse_adam.py',
      [String(dim), String(batch), String(rows), String(seconds)],
      300_000,
    );
    const peer = run.ok ? run.json : undefined;
    if (!run.ok) out.peer = run.peer;
    else if (typeof peer?.row_updates_per_s === 'number') {
      // Measure again right after the peer and compare their mean to it: both sides then see
      // the same machine load (a shared 2-core machine swings ±30% between runs).
      const second = measure(seconds);
      const mean = (first.rate + second.rate) / 2;
      out.peer = typeof peer.peer === 'string' ? peer.peer : 'pytorch-sparseadam';
      out.row_updates_per_s = Math.round(mean);
      out.row_updates_per_s_runs = [Math.round(first.rate), Math.round(second.rate)];
      out.torch_row_updates_per_s = peer.row_updates_per_s;
      out.torch_step_ms = peer.step_ms ?? null;
      out.vs_torch = +(mean / peer.row_updates_per_s).toFixed(2);
    } else out.peer = 'failed: no row_updates_per_s in its output';
  }
  return out;
}
