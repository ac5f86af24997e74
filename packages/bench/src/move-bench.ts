import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  connectNats,
  placementKv,
  readPlacement,
  requestBytes,
  startNatsServer,
  writePlacement,
  type NatsServerHandle,
} from '@freshet/nats';
import { decodePullReply, encodePull, subjects } from '@freshet/protocol';
import { aligned, ShardHost, tickOf, type Shard } from '@freshet/shard';

/** Options of {@link runMoveBench}. */
export interface MoveBenchOptions {
  /** A running nats-server (JetStream on); one is started (and stopped) when absent. */
  url?: string;
  /** Rows of the shard that moves (Adam, `dim` wide). Default 2^18. */
  rows?: number;
  dim?: number;
  /** Moves measured, back and forth (default 3). */
  moves?: number;
  fsync?: boolean;
}

/**
 * What moving a shard costs (docs/resharding.md): two shard hosts in this process, one shard
 * of `rows` Adam rows moved between them `moves` times through the placement, while a client
 * pulls 64 of its rows back to back. Prints, per move, the time from the placement write until
 * the shard answers on its new host and the longest the client went without an answer, with
 * the old host's hand-off (final checkpoint + upload) and the new host's restore.
 */
export async function runMoveBench(opts: MoveBenchOptions = {}): Promise<Record<string, unknown>> {
  const rows = opts.rows ?? 1 << 18;
  const dim = opts.dim ?? 16;
  const moves = opts.moves ?? 3;
  let server: NatsServerHandle | undefined;
  const url = opts.url ?? (server = await startNatsServer({ maxPayload: 8 * 1024 * 1024 })).url;
  const dir = mkdtempSync(join(tmpdir(), 'freshet-move-bench-'));
  const cluster = `move-${process.pid}-${Date.now().toString(36)}`;
  const s = subjects(cluster);
  const nc = await connectNats({ servers: url }, 'freshet-move-bench');
  const hosts: ShardHost[] = [];
  const quiet = () => undefined;
  try {
    await nc.jetstream().views.kv(s.kvBucket);
    const kv = await placementKv(nc, cluster);
    await writePlacement(kv, { epoch: 1, hosts: ['a'], at: Date.now() }, 0);
    const model = {
      name: 'move-bench',
      tables: [{ name: 'emb', dim, optimizer: { kind: 'adam', lr: 1e-3 }, staleness: { policy: 'scale' } }],
    };
    for (const host of ['a', 'b']) {
      const h = new ShardHost(
        {
          cluster,
          host,
          nats: { servers: url },
          dataDir: join(dir, host),
          pollMs: 50,
          shard: { model, fsync: opts.fsync ?? false, checkpointIntervalMs: 0, checkpointWalBytes: 1 << 30 },
        },
        { log: quiet },
      );
      await h.start();
      hosts.push(h);
    }
    // fill the shard in place (as the shard bench does): a checkpoint carries them like pushed rows
    // (the hosts run their shards on their own thread: option threads 0)
    const tab = (hosts[0]!.shards.get(0) as Shard).core.tables[0]!;
    const tick = tickOf(Date.now());
    for (let i = 0; i < rows; i++) tab.create(i, 0x5eed, tick);
    tab.takeChanges(rows);

    // a client that always wants an answer: the longest wait for one is what a worker sees
    let stop = false;
    let lastOk = performance.now();
    let gap = 0;
    let pulls = 0;
    const keys = new Uint32Array(128);
    for (let i = 0; i < 64; i++) {
      keys[2 * i] = (i * 4099) % rows;
      keys[2 * i + 1] = 0x5eed;
    }
    const req = encodePull({ worker: 'move-bench', tables: [{ t: 0, keys }] });
    const client = (async () => {
      while (!stop) {
        try {
          decodePullReply(aligned(await requestBytes(nc, s.pull(0), req, { timeoutMs: 500 })));
          const now = performance.now();
          gap = Math.max(gap, now - lastOk);
          lastOk = now;
          pulls++;
        } catch {
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    })();

    const runs: Array<Record<string, number>> = [];
    for (let m = 0; m < moves; m++) {
      const to = m % 2 === 0 ? 'b' : 'a';
      const from = hosts[m % 2]!;
      const dest = hosts[(m + 1) % 2]!;
      await new Promise((r) => setTimeout(r, 300));
      gap = 0;
      const cur = (await readPlacement(kv))!;
      const t0 = performance.now();
      await writePlacement(kv, { epoch: cur.value.epoch + 1, hosts: [to], at: Date.now() }, cur.revision);
      while (!dest.shards.get(0)) await new Promise((r) => setTimeout(r, 5));
      const answeredMs = performance.now() - t0;
      // the client's next answer closes the gap
      const p0 = pulls;
      while (pulls === p0) await new Promise((r) => setTimeout(r, 5));
      const st = dest.status();
      const restore = dest.shards.get(0)!.restore;
      runs.push({
        move_ms: Math.round(answeredMs),
        client_gap_ms: Math.round(gap),
        handoff_ms: from.status().moves.lastOutMs ?? -1,
        restore_ms: restore?.ms ?? -1,
        fetch_ms: restore?.fetchMs ?? -1,
        checkpoint_bytes: st.running[0]?.lastCheckpoint?.bytes ?? 0,
      });
    }
    stop = true;
    await client;
    const med = (k: string) => {
      const xs = runs.map((r) => r[k]!).sort((a, b) => a - b);
      return xs[Math.floor(xs.length / 2)]!;
    };
    return {
      bench: 'move',
      rows,
      dim,
      moves,
      checkpoint_mb: +(med('checkpoint_bytes') / 1048576).toFixed(1),
      move_ms_median: med('move_ms'),
      client_gap_ms_median: med('client_gap_ms'),
      handoff_ms_median: med('handoff_ms'),
      restore_ms_median: med('restore_ms'),
      runs,
    };
  } finally {
    for (const h of hosts) await h.stop().catch(() => undefined);
    await nc.close().catch(() => undefined);
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
