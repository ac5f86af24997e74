import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { connect } from 'nats';

/**
 * Load generator of the serve bench, in its own thread so that sending requests does not steal
 * the serving node's event loop. Open loop at a fixed rate (latency measured from each request's
 * scheduled time, so queueing delay is not hidden) or closed loop at a fixed concurrency (max).
 */
export interface BenchClientJob {
  transport: 'http' | 'nats';
  /** HTTP base URL (`http://127.0.0.1:port`) or NATS server URL. */
  url: string;
  /** HTTP path or NATS subject. */
  target: string;
  bodies: string[];
  /** Requests/s (open loop); absent: closed loop at `concurrency`. */
  rate?: number;
  concurrency: number;
  seconds: number;
  warmupSeconds: number;
}

export interface BenchClientResult {
  rps: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  ok: number;
  errors: number;
  seconds: number;
}

const job = workerData as BenchClientJob;

async function main(): Promise<BenchClientResult> {
  const te = new TextEncoder();
  const payloads = job.bodies.map((b) => te.encode(b));
  let send: (i: number) => Promise<boolean>;
  let close: () => Promise<void> = () => Promise.resolve();
  if (job.transport === 'http') {
    const agent = new Agent({ keepAlive: true, maxSockets: Math.max(job.concurrency, 64) });
    const u = new URL(job.target, job.url);
    send = (i) =>
      new Promise<boolean>((resolve) => {
        const body = payloads[i % payloads.length]!;
        const req = request(
          u,
          {
            method: 'POST',
            agent,
            headers: { 'content-type': 'application/json', 'content-length': body.byteLength },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode === 200));
          },
        );
        req.on('error', () => resolve(false));
        req.end(body);
      });
    close = () => {
      agent.destroy();
      return Promise.resolve();
    };
  } else {
    const nc = await connect({ servers: job.url });
    send = async (i) => {
      try {
        const m = await nc.request(job.target, payloads[i % payloads.length]!, { timeout: 5000 });
        return !m.headers?.get('Nats-Service-Error-Code');
      } catch {
        return false;
      }
    };
    close = () => nc.close();
  }

  const lat: number[] = [];
  let ok = 0;
  let errors = 0;
  let n = 0;
  const t0 = performance.now();
  const warmEnd = t0 + job.warmupSeconds * 1000;
  const end = warmEnd + job.seconds * 1000;
  const record = (start: number, good: boolean) => {
    if (start < warmEnd) return;
    if (good) {
      ok++;
      lat.push(performance.now() - start);
    } else errors++;
  };

  if (job.rate) {
    const interval = 1000 / job.rate;
    const inflight = new Set<Promise<void>>();
    while (performance.now() < end) {
      const now = performance.now();
      // Send every request whose scheduled time has come, then sleep until the next one.
      while (t0 + n * interval <= now) {
        const scheduled = t0 + n * interval;
        const p = send(n++).then((good) => {
          record(scheduled, good);
          inflight.delete(p);
        });
        inflight.add(p);
      }
      await new Promise((r) => setTimeout(r, Math.max(0, t0 + n * interval - performance.now())));
    }
    await Promise.all(inflight);
  } else {
    await Promise.all(
      Array.from({ length: job.concurrency }, async () => {
        while (performance.now() < end) {
          const start = performance.now();
          record(start, await send(n++));
        }
      }),
    );
  }
  await close();
  lat.sort((a, b) => a - b);
  const q = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.ceil(p * lat.length) - 1)]! : 0);
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return {
    rps: round(ok / job.seconds),
    p50_ms: round(q(0.5)),
    p99_ms: round(q(0.99)),
    max_ms: round(lat[lat.length - 1] ?? 0),
    ok,
    errors,
    seconds: job.seconds,
  };
}

main().then(
  (r) => parentPort?.postMessage({ ok: true, result: r }),
  (e: unknown) => parentPort?.postMessage({ ok: false, error: String((e as Error)?.stack ?? e) }),
);
