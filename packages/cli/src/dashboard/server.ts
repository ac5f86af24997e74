import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { NatsConnection } from 'nats';
import { FreshetError } from '@freshet/protocol';
import type { ClusterView, HistogramView } from '../actor-view.js';
import { createClusterMetrics } from '../metrics.js';
import { collectModels, type ModelView } from '../models-view.js';
import { dashboardPage } from './page.js';

/** One point of the dashboard's time series (cluster-wide aggregates). */
export interface DashboardPoint {
  t: number;
  /** Progressive AUC/logloss, example-weighted over workers. */
  auc: number | null;
  logloss: number | null;
  examplesPerSec: number;
  updatesPerSec: number;
  freshnessP50Ms: number | null;
  freshnessP99Ms: number | null;
  stalenessP50: number | null;
  stalenessP99: number | null;
}

export interface DashboardState {
  cluster: string | null;
  history: DashboardPoint[];
  view: ClusterView | null;
  freshnessHistogram: HistogramView & { source: string };
  stalenessHistogram: HistogramView & { source: string };
  /** With `also`: the live cluster and the other models side by side (docs/multi-model.md). */
  models: ModelView[] | null;
  error: string | null;
}

export interface DashboardOptions {
  cluster?: string;
  /** Loopback unless `expose` is set. */
  host?: string;
  port?: number;
  expose?: boolean;
  intervalMs?: number;
  /** Points kept (at 1 s: ten minutes). */
  historySize?: number;
  /** Other models (clusters learning from `cluster`'s stream) shown beside it; needs `cluster`. */
  also?: string[];
  signal?: AbortSignal;
}

export interface Dashboard {
  url: string;
  state(): DashboardState;
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
const freshnessBounds = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000];
const stalenessBounds = [0, 1, 2, 4, 8, 16, 32, 64, 128];

function maxOf(xs: Array<number | null>): number | null {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? Math.max(...v) : null;
}

/** Buckets of samples by upper bound (the last bucket is +Inf). */
function bucket(samples: number[], bounds: number[]): number[] {
  const counts = new Array<number>(bounds.length + 1).fill(0);
  for (const s of samples) {
    let i = bounds.findIndex((b) => s <= b);
    if (i < 0) i = bounds.length;
    counts[i] = (counts[i] ?? 0) + 1;
  }
  return counts;
}

function sumHistograms(hs: HistogramView[]): HistogramView | null {
  const first = hs[0];
  if (!first) return null;
  const counts = first.counts.map((_, i) => hs.reduce((a, h) => a + (h.counts[i] ?? 0), 0));
  return { bounds: first.bounds, counts };
}

/**
 * Cumulative `<name>_bucket{le=...}` lines of a Prometheus histogram (all label sets summed),
 * re-bucketed onto `bounds`: the count at a bound is the cumulative count at the largest `le` not
 * above it, so coarser display buckets never over-count.
 */
export function promHistogram(text: string, name: string, bounds: number[]): HistogramView | null {
  const cum = new Map<number, number>();
  const re = new RegExp(`^${name}_bucket\\{[^}]*le="([^"]+)"[^}]*\\} (\\S+)$`, 'gm');
  for (const m of text.matchAll(re)) {
    const le = m[1] === '+Inf' ? Infinity : Number(m[1]);
    const v = Number(m[2]);
    if (Number.isFinite(v) && !Number.isNaN(le)) cum.set(le, (cum.get(le) ?? 0) + v);
  }
  if (!cum.size) return null;
  const les = [...cum.keys()].sort((a, b) => a - b);
  const at = (b: number) => {
    let c = 0;
    for (const le of les) if (le <= b) c = cum.get(le) ?? c;
    return c;
  };
  const total = cum.get(Infinity) ?? at(Number.MAX_VALUE);
  const cumAt = bounds.map(at);
  const counts = cumAt.map((c, i) => c - (i ? cumAt[i - 1]! : 0));
  counts.push(total - (cumAt[cumAt.length - 1] ?? 0));
  return { bounds, counts };
}

async function fetchText(url: string, timeoutMs: number): Promise<string | null> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return r.ok ? await r.text() : null;
  } catch {
    return null;
  }
}

/** Aggregates a cluster view into one time-series point. */
export function pointOf(v: ClusterView): DashboardPoint {
  let w = 0;
  let auc = 0;
  let ll = 0;
  for (const x of v.workers) {
    if (x.auc === null || x.logloss === null || !Number.isFinite(x.auc) || !Number.isFinite(x.logloss))
      continue;
    const weight = Math.max(1, x.examples ?? 1);
    w += weight;
    auc += weight * x.auc;
    ll += weight * x.logloss;
  }
  return {
    t: v.at,
    auc: w ? auc / w : null,
    logloss: w ? ll / w : null,
    examplesPerSec: v.workers.reduce((a, x) => a + (x.examplesPerSec ?? 0), 0),
    updatesPerSec: v.shards.reduce((a, x) => a + (x.updatesPerSec ?? 0), 0),
    freshnessP50Ms: maxOf(v.serving.map((x) => x.freshnessP50Ms)),
    freshnessP99Ms: maxOf(v.serving.map((x) => x.freshnessP99Ms)),
    stalenessP50: maxOf(v.shards.map((x) => x.stalenessP50)),
    stalenessP99: maxOf(v.shards.map((x) => x.stalenessP99)),
  };
}

/**
 * The dashboard state from what was sampled: the history, the latest view and the serving nodes'
 * Prometheus freshness buckets. Histograms come from the actors when they report buckets, else
 * from the sampled quantiles (`source` says which). Shared with the `--report` files.
 */
export function dashboardState(o: {
  cluster: string | null;
  history: DashboardPoint[];
  view: ClusterView | null;
  servingFreshness?: HistogramView | null;
  models?: ModelView[] | null;
  error?: string | null;
}): DashboardState {
  const v = o.view;
  const fromServing =
    sumHistograms((v?.serving ?? []).flatMap((s) => (s.freshnessHistogram ? [s.freshnessHistogram] : []))) ??
    o.servingFreshness ??
    null;
  const fromShards = sumHistograms(
    (v?.shards ?? []).flatMap((s) => (s.stalenessHistogram ? [s.stalenessHistogram] : [])),
  );
  const fresh = o.history
    .flatMap((p) => [p.freshnessP50Ms, p.freshnessP99Ms])
    .filter((x): x is number => x !== null);
  const stale = o.history
    .flatMap((p) => [p.stalenessP50, p.stalenessP99])
    .filter((x): x is number => x !== null);
  return {
    cluster: o.cluster,
    history: o.history,
    view: v,
    freshnessHistogram: fromServing
      ? { ...fromServing, source: 'serving nodes' }
      : { bounds: freshnessBounds, counts: bucket(fresh, freshnessBounds), source: 'sampled p50/p99' },
    stalenessHistogram: fromShards
      ? { ...fromShards, source: 'shards' }
      : { bounds: stalenessBounds, counts: bucket(stale, stalenessBounds), source: 'sampled p50/p99' },
    models: o.models ?? null,
    error: o.error ?? null,
  };
}

/** The serving nodes' cumulative freshness buckets, read from their own /metrics. */
export async function servingFreshnessOf(view: ClusterView): Promise<HistogramView | null> {
  const texts = await Promise.all(
    view.serving.flatMap((x) => (x.http ? [fetchText(`${x.http}/metrics`, 500)] : [])),
  );
  return sumHistograms(
    texts.flatMap((t) => {
      const h = t ? promHistogram(t, 'freshet_serving_freshness_milliseconds', freshnessBounds) : null;
      return h ? [h] : [];
    }),
  );
}

/**
 * The live dashboard: polls the cluster through the service API every `intervalMs`, keeps a
 * bounded history, and serves the page (`/`), its data (`/api/state`) and Prometheus metrics
 * (`/metrics`) over node:http. Histograms come from the actors when they report buckets, else
 * from the sampled quantiles (the page says which).
 */
export async function startDashboard(nc: NatsConnection, opts: DashboardOptions = {}): Promise<Dashboard> {
  const host = opts.host ?? '127.0.0.1';
  if (!LOOPBACK.has(host) && !opts.expose) {
    throw new FreshetError(
      'CONFIG',
      `dashboard host ${host} is not loopback: pass --expose to serve beyond this machine`,
    );
  }
  const also = opts.also ?? [];
  if (also.length > 0 && opts.cluster === undefined)
    throw new FreshetError('CONFIG', 'also needs cluster (the live model the others learn beside)');
  const intervalMs = opts.intervalMs ?? 1000;
  const historySize = opts.historySize ?? 600;
  const metrics = createClusterMetrics(nc, opts.cluster === undefined ? {} : { cluster: opts.cluster });
  const history: DashboardPoint[] = [];
  let view: ClusterView | null = null;
  let error: string | null = null;
  // Serving nodes' cumulative freshness buckets, from their own /metrics when reachable.
  let servingFreshness: HistogramView | null = null;
  let models: ModelView[] | null = null;

  const poll = async () => {
    try {
      view = await metrics.refresh();
      history.push(pointOf(view));
      servingFreshness = await servingFreshnessOf(view);
      if (also.length > 0) models = await collectModels(nc, opts.cluster!, also);
      if (history.length > historySize) history.shift();
      error = null;
    } catch (e) {
      error = (e as Error).message;
    }
  };
  await poll();
  let polling = false;
  const timer = setInterval(() => {
    if (polling) return;
    polling = true;
    void poll().finally(() => (polling = false));
  }, intervalMs);

  const state = (): DashboardState =>
    dashboardState({ cluster: opts.cluster ?? null, history, view, servingFreshness, models, error });

  const page = dashboardPage({ intervalMs });
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405).end();
      return;
    }
    if (path === '/') {
      res
        .writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
        .end(page);
    } else if (path === '/api/state') {
      res
        .writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
        .end(JSON.stringify(state()));
    } else if (path === '/metrics') {
      metrics.registry.metrics().then(
        (t) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(t),
        (e: unknown) => res.writeHead(503).end(String((e as Error).message)),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  };
  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) =>
      reject(
        new FreshetError('CONFIG', `cannot serve the dashboard on ${host}:${opts.port ?? 0}: ${e.message}`),
      ),
    );
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      clearInterval(timer);
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    })());
  opts.signal?.addEventListener('abort', () => void close(), { once: true });
  return { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/`, state, close };
}
