import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { connect } from 'nats';

/**
 * Load generator of the serve bench, run as its own process (forked with an IPC channel: the job
 * arrives as the first message, the result goes back as one) so that sending requests shares
 * neither the serving node's event loop nor its heap and GC. Open loop at a fixed rate (latency
 * measured from each request's scheduled time, so queueing delay is not hidden: no coordinated
 * omission) or closed loop at a fixed concurrency (max). It reports its own CPU use and how late
 * it sent requests, so a starved generator shows instead of passing as a slow server.
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
  /** CPU the generator used over the measured window, in % of one core. */
  cpu_pct: number;
  /** How late requests left after their scheduled time (open loop; 0 for closed loop), p99 in ms. */
  send_lag_p99_ms: number;
}

/** What the forked generator tells its parent. */
export type ClientMessage =
  { kind: 'measuring' } | { kind: 'done'; ok: boolean; result?: BenchClientResult; error?: string };

async function main(job: BenchClientJob): Promise<BenchClientResult> {
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
  const lag: number[] = [];
  let cpu0: NodeJS.CpuUsage | undefined;
  let ok = 0;
  let errors = 0;
  let n = 0;
  const t0 = performance.now();
  const warmEnd = t0 + job.warmupSeconds * 1000;
  const end = warmEnd + job.seconds * 1000;
  const measuring = setTimeout(() => {
    cpu0 = process.cpuUsage();
    process.send?.({ kind: 'measuring' } satisfies ClientMessage);
  }, job.warmupSeconds * 1000);
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
        if (scheduled >= warmEnd) lag.push(now - scheduled);
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
    lag.push(0);
    await Promise.all(
      Array.from({ length: job.concurrency }, async () => {
        while (performance.now() < end) {
          const start = performance.now();
          record(start, await send(n++));
        }
      }),
    );
  }
  clearTimeout(measuring);
  const cpu = process.cpuUsage(cpu0);
  const measuredMs = Math.max(1, performance.now() - warmEnd);
  await close();
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return {
    rps: round(ok / job.seconds),
    p50_ms: round(quantile(lat, 0.5)),
    p99_ms: round(quantile(lat, 0.99)),
    max_ms: round(quantile(lat, 1)),
    ok,
    errors,
    seconds: job.seconds,
    cpu_pct: Math.round(((cpu.user + cpu.system) / 1000 / measuredMs) * 1000) / 10,
    send_lag_p99_ms: round(quantile(lag, 0.99)),
  };
}

function quantile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = xs.sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!;
}

// Entry point of the forked process: one job in, one result out, then exit.
process.once('message', (job: BenchClientJob) => {
  main(job).then(
    (result) =>
      process.send?.({ kind: 'done', ok: true, result } satisfies ClientMessage, () => process.exit(0)),
    (e: unknown) =>
      process.send?.(
        { kind: 'done', ok: false, error: String((e as Error)?.stack ?? e) } satisfies ClientMessage,
        () => process.exit(1),
      ),
  );
});
