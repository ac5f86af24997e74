#!/usr/bin/env node
import { connectNats, requestBytes } from '@freshet/nats';
import { decodePullReply, decodePushReply, encodePull, encodePush, subjects } from '@freshet/protocol';
import { aligned } from '@freshet/shard';

/**
 * Client side of {@link runShardNatsBench}, run as its own process so client encode/decode does
 * not share a thread with the shard. argv[2]: JSON {url, cluster, rows, dim, pullKeys, pushKeys,
 * concurrency, seconds}. Prints one JSON line.
 */
interface ClientOptions {
  url: string;
  cluster: string;
  rows: number;
  dim: number;
  pullKeys: number;
  pushKeys: number;
  concurrency: number;
  seconds: number;
}

const o = JSON.parse(process.argv[2] ?? '{}') as ClientOptions;
const quantile = (xs: number[], q: number) => {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0;
};
let seed = 12345;
const rand = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 4294967296;
};
/** n distinct existing keys (the shard pre-filled keys (i, 0x5eed) for i < rows). */
function keys(n: number): Uint32Array {
  const k = new Uint32Array(n * 2);
  const start = Math.floor(rand() * (o.rows - n));
  const stride = 1 + Math.floor(rand() * 3);
  for (let i = 0; i < n; i++) {
    k[2 * i] = (start + ((i * stride) % (o.rows - start))) >>> 0;
    k[2 * i + 1] = 0x5eed;
  }
  return k;
}

async function main() {
  const nc = await connectNats({ servers: o.url }, 'freshet-bench-client');
  const s = subjects(o.cluster);
  // Pulls: one at a time, latency per request.
  const pullLat: number[] = [];
  let version = 0;
  const pullUntil = performance.now() + (o.seconds * 1000) / 2;
  while (performance.now() < pullUntil) {
    const req = encodePull({ worker: 'bench', tables: [{ t: 0, keys: keys(o.pullKeys) }] });
    const t = performance.now();
    const r = decodePullReply(aligned(await requestBytes(nc, s.pull(0), req)));
    pullLat.push(performance.now() - t);
    version = r.version;
  }
  // Pushes: `concurrency` in flight, each acknowledged only once logged.
  const pushLat: number[] = [];
  let pushes = 0;
  let rows = 0;
  let id = 0;
  const grads = new Float32Array(o.pushKeys * o.dim).map(() => (rand() - 0.5) * 0.01);
  const counts = new Uint32Array(o.pushKeys).fill(1);
  const t0 = performance.now();
  const pushUntil = t0 + (o.seconds * 1000) / 2;
  await Promise.all(
    Array.from({ length: o.concurrency }, async () => {
      while (performance.now() < pushUntil) {
        const req = encodePush({
          id: `bench-${process.pid}-${id++}`,
          worker: 'bench',
          clock: 0,
          base: version,
          tables: [{ t: 0, dim: o.dim, keys: keys(o.pushKeys), grads, counts }],
        });
        const t = performance.now();
        const r = decodePushReply(aligned(await requestBytes(nc, s.push(0), req, { timeoutMs: 30_000 })));
        pushLat.push(performance.now() - t);
        version = r.version;
        pushes++;
        rows += r.applied;
      }
    }),
  );
  const el = (performance.now() - t0) / 1000;
  await nc.close();
  process.stdout.write(
    JSON.stringify({
      pulls: pullLat.length,
      pull_p50_ms: +quantile(pullLat, 0.5).toFixed(3),
      pull_p99_ms: +quantile(pullLat, 0.99).toFixed(3),
      pushes_per_s: Math.round(pushes / el),
      push_row_updates_per_s: Math.round(rows / el),
      push_p50_ms: +quantile(pushLat, 0.5).toFixed(3),
      push_p99_ms: +quantile(pushLat, 0.99).toFixed(3),
    }) + '\n',
  );
}

main().catch((e: unknown) => {
  process.stderr.write(`bench client: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
