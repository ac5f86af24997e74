import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startNatsServer, type NatsServerHandle } from '@freshet/nats';
import { startShard, tickOf } from '@freshet/shard';

/** Options of {@link runShardNatsBench}. */
export interface ShardNatsBenchOptions {
  /** A running nats-server; one is started (and stopped) when absent. */
  url?: string;
  /** Pre-filled rows (default 2^20). */
  rows?: number;
  dim?: number;
  /** Keys per pull (default 4096) and per push (default 4096). */
  pullKeys?: number;
  pushKeys?: number;
  /** Pushes in flight from the client (default 8): group commit batches them. */
  concurrency?: number;
  /** Measured seconds, half pulls, half pushes (default 6). */
  seconds?: number;
  /** Log + checkpoints in a temporary data dir (default true): acknowledged = durable. */
  durable?: boolean;
  fsync?: boolean;
}

/**
 * End-to-end shard benchmark through a real nats-server: an in-process shard (Adam, dim 16),
 * and a client in a separate process doing sequential 4096-key pulls (latency) and then
 * concurrent pushes (throughput; each acknowledged after its WAL write). Returns one object.
 */
export async function runShardNatsBench(opts: ShardNatsBenchOptions = {}): Promise<Record<string, unknown>> {
  const rows = opts.rows ?? 1 << 20;
  const dim = opts.dim ?? 16;
  const o = {
    rows,
    dim,
    pullKeys: opts.pullKeys ?? 4096,
    pushKeys: opts.pushKeys ?? 4096,
    concurrency: opts.concurrency ?? 8,
    seconds: opts.seconds ?? 6,
  };
  let server: NatsServerHandle | undefined;
  const url = opts.url ?? (server = await startNatsServer({ maxPayload: 32 * 1024 * 1024 })).url;
  const durable = opts.durable ?? true;
  const dataDir = durable ? mkdtempSync(join(tmpdir(), 'freshet-shard-bench-')) : undefined;
  const cluster = `bench-${process.pid}-${Date.now().toString(36)}`;
  const shard = await startShard(
    {
      cluster,
      shard: 0,
      shards: 1,
      nats: { servers: url },
      model: {
        name: 'bench',
        tables: [{ name: 'emb', dim, optimizer: { kind: 'adam', lr: 1e-3 }, staleness: { policy: 'scale' } }],
      },
      ...(dataDir ? { dataDir } : {}),
      fsync: opts.fsync ?? false,
      checkpointIntervalMs: 0,
      checkpointWalBytes: 1 << 30,
    },
    { log: () => undefined },
  );
  try {
    const tab = shard.core.tables[0]!;
    const tick = tickOf(Date.now());
    for (let i = 0; i < rows; i++) tab.create(i, 0x5eed, tick);
    tab.takeChanges(rows);
    const client = join(dirname(fileURLToPath(import.meta.url)), 'shard-nats-client.js');
    const out = await new Promise<string>((resolve, reject) => {
      const c = spawn(process.execPath, [client, JSON.stringify({ url, cluster, ...o })], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      c.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
      c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      const kill = setTimeout(() => c.kill('SIGKILL'), (o.seconds + 60) * 1000);
      c.once('exit', (code) => {
        clearTimeout(kill);
        if (code === 0) resolve(stdout);
        else reject(new Error(`bench client exited ${code}: ${stderr.slice(-1000)}`));
      });
    });
    const client_ = JSON.parse(out.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
    const st = shard.status();
    const groupCommits = st.wal?.groupCommits ?? 0;
    return {
      bench: 'shard-nats',
      dim,
      rows,
      pull_keys: o.pullKeys,
      push_keys: o.pushKeys,
      concurrency: o.concurrency,
      durable,
      fsync: opts.fsync ?? false,
      ...client_,
      wal_group_commits: groupCommits,
      wal_records_per_commit: groupCommits ? +((st.wal?.records ?? 0) / groupCommits).toFixed(2) : 0,
      wal_mb: +((st.wal?.bytes ?? 0) / 1048576).toFixed(1),
      staleness_p50: st.staleness.p50,
      staleness_p99: st.staleness.p99,
    };
  } finally {
    await shard.stop().catch(() => undefined);
    await server?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }
}
