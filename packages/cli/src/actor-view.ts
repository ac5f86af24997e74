import { mergeProgressive, type ProgressiveHistogram } from '@freshet/protocol';
import { num, str, type ActorStatus } from './discovery.js';

/**
 * One flat view per role of what an actor reports, shared by `freshet status`, the dashboard and
 * the Prometheus exporter so the three never disagree. Fields a role does not report are null.
 */

/** A histogram as roles report it: upper bounds and counts per bucket. */
export interface HistogramView {
  bounds: number[];
  counts: number[];
}

export interface ShardView {
  id: string;
  shard: number | null;
  state: string | null;
  rows: number | null;
  memoryBytes: number | null;
  version: number | null;
  updatesPerSec: number | null;
  stalenessP50: number | null;
  stalenessP99: number | null;
  stalenessHistogram: HistogramView | null;
  rejects: number | null;
  evictions: number | null;
  /** ms since the epoch. */
  lastCheckpoint: number | null;
  deltaSeq: number | null;
}

export interface WorkerView {
  id: string;
  state: string | null;
  partitions: number[];
  examplesPerSec: number | null;
  examples: number | null;
  auc: number | null;
  logloss: number | null;
  /** Exact progressive AUC of the worker's last `window` examples (its `metrics.window` option). */
  windowAuc: number | null;
  window: number | null;
  backend: string | null;
  lag: number | null;
  /** Acks of applied events awaiting the consumer leader's confirmation now. */
  acksConfirming: number | null;
  /** Ack confirmations sent again (a consumer leader away or re-elected). */
  ackRetries: number | null;
  /** Redeliveries of already-applied events, acked instead of trained. */
  appliedRedeliveries: number | null;
  /** Events this worker dead-lettered since it started, by reason code (only reasons seen). */
  deadLetters: Record<string, number> | null;
  /** Host routing (worker `hostRouting`): host messages, requests they carried, direct requests, failed host messages. */
  hostMessages: number | null;
  hostParts: number | null;
  directRequests: number | null;
  hostFailures: number | null;
  /** How long its last host-message window lingered for more parts (ms). */
  hostLingerMs: number | null;
}

export interface ServingView {
  id: string;
  state: string | null;
  version: number | null;
  /** Event-to-serving freshness (ms). */
  freshnessP50Ms: number | null;
  freshnessP99Ms: number | null;
  freshnessHistogram: HistogramView | null;
  requestsPerSec: number | null;
  /** Its HTTP base URL when it serves HTTP (the dashboard reads its freshness buckets there). */
  http: string | null;
  /** Pinned to the weights it holds by the model guard (docs/model-versions.md): since, reason. */
  pinned: { since: number; reason: string; logloss: number; baseline: number; by: string } | null;
  /** The slice it holds (`index/count`, serving option `slice`); null: the whole model. */
  slice: string | null;
}

/** `freshet status --json`: one entry per live actor. */
export interface ClusterView {
  cluster: string | null;
  at: number;
  shards: ShardView[];
  workers: WorkerView[];
  serving: ServingView[];
  /**
   * Progressive AUC/logloss of every worker's examples together, and the AUC of their rolling
   * windows together (`windowExamples` of them), from merged histograms (null without workers).
   */
  progressive: {
    examples: number;
    auc: number | null;
    logloss: number | null;
    windowAuc: number | null;
    windowExamples: number | null;
  } | null;
  /** Dead letters the live workers stored since they started, by reason (non-zero only). */
  deadLetters: Record<string, number>;
}

const n = (s: Record<string, unknown>, ...p: string[]) => num(s, ...p) ?? null;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function pick(s: Record<string, unknown>, ...paths: string[]): unknown {
  for (const p of paths) {
    let v: unknown = s;
    for (const k of p.split('.')) v = isRecord(v) ? v[k] : undefined;
    if (v !== undefined) return v;
  }
  return undefined;
}

function histogram(v: unknown): HistogramView | null {
  if (!isRecord(v)) return null;
  const bounds = v.bounds ?? v.le ?? v.buckets;
  const counts = v.counts;
  if (!Array.isArray(bounds) || !Array.isArray(counts)) return null;
  const b = bounds.filter((x): x is number => typeof x === 'number');
  const c = counts.filter((x): x is number => typeof x === 'number');
  return b.length && c.length ? { bounds: b, counts: c } : null;
}

function time(v: unknown): number | null {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string') {
    const t = Date.parse(v);
    return Number.isFinite(t) ? t : null;
  }
  if (isRecord(v)) return time(v.ts ?? v.at ?? v.time);
  return null;
}

/** A number, or the sum of a record of numbers (`rejects: {STALE: 3, NON_FINITE: 1}`). */
function sumOrNum(v: unknown): number | null {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (isRecord(v)) return Object.values(v).reduce<number>((a, b) => a + (typeof b === 'number' ? b : 0), 0);
  return null;
}

export function shardView(a: ActorStatus): ShardView {
  const s = a.status;
  const meta = a.metadata.shard !== undefined ? Number(a.metadata.shard) : null;
  return {
    id: a.id,
    shard: n(s, 'shard') ?? (Number.isFinite(meta) ? meta : null),
    state: str(s, 'state', 'status') ?? null,
    rows: n(s, 'rows', 'rowCount', 'totalRows'),
    memoryBytes: n(s, 'bytes', 'memoryBytes', 'memory.rss', 'rssBytes', 'memory'),
    version: n(s, 'version'),
    updatesPerSec: n(s, 'updatesPerS', 'updatesPerSec', 'updateRate', 'pushesPerSec', 'rates.updates'),
    stalenessP50: n(s, 'staleness.p50', 'stalenessP50'),
    stalenessP99: n(s, 'staleness.p99', 'stalenessP99'),
    stalenessHistogram: histogram(pick(s, 'staleness.histogram', 'stalenessHistogram')),
    rejects: sumOrNum(pick(s, 'rejects', 'rejected')),
    evictions: n(s, 'evictions', 'evicted', 'counters.evictions'),
    lastCheckpoint: time(pick(s, 'lastCheckpoint', 'checkpoint.lastAt', 'lastCheckpointAt')),
    deltaSeq: n(s, 'deltaSeq', 'delta.seq', 'seq'),
  };
}

export function workerView(a: ActorStatus): WorkerView {
  const s = a.status;
  const parts = pick(s, 'partitions', 'assigned');
  // Workers report lag per partition ({"0": 12, ...}); the table shows the sum.
  const lagRaw = pick(s, 'lag');
  const lag = isRecord(lagRaw)
    ? Object.values(lagRaw).reduce<number>((a, b) => a + (typeof b === 'number' ? b : 0), 0)
    : n(s, 'lag', 'pending', 'consumerLag');
  return {
    id: a.id,
    state: str(s, 'state', 'status') ?? null,
    partitions: Array.isArray(parts) ? parts.filter((x): x is number => typeof x === 'number') : [],
    examplesPerSec: n(s, 'examplesPerS', 'examplesPerSec', 'rates.examples', 'throughput'),
    examples: n(s, 'examples', 'examplesTotal', 'counters.examples'),
    auc: n(s, 'progressive.auc', 'auc'),
    logloss: n(s, 'progressive.logloss', 'logloss'),
    windowAuc: n(s, 'progressive.windowAuc'),
    window: n(s, 'progressive.window'),
    backend: str(s, 'backend') ?? null,
    lag,
    acksConfirming: n(s, 'acksConfirming'),
    ackRetries: n(s, 'counters.ackRetries'),
    appliedRedeliveries: n(s, 'counters.appliedRedeliveries'),
    deadLetters: countsByReason(pick(s, 'deadLetters')),
    hostMessages: n(s, 'hostRouting.hostMessages'),
    hostParts: n(s, 'hostRouting.hostParts'),
    directRequests: n(s, 'hostRouting.direct'),
    hostFailures: n(s, 'hostRouting.hostFailures'),
    hostLingerMs: n(s, 'hostRouting.lingerMs'),
  };
}

/** The non-zero counts of a `{reason: count}` record, or null when there is none. */
function countsByReason(v: unknown): Record<string, number> | null {
  if (!isRecord(v)) return null;
  return Object.fromEntries(
    Object.entries(v).filter((e): e is [string, number] => typeof e[1] === 'number' && e[1] > 0),
  );
}

export function servingView(a: ActorStatus): ServingView {
  const s = a.status;
  return {
    id: a.id,
    state: str(s, 'state', 'status') ?? null,
    version: n(s, 'version'),
    freshnessP50Ms: n(s, 'freshness.p50Ms', 'freshness.p50', 'freshnessP50Ms'),
    freshnessP99Ms: n(s, 'freshness.p99Ms', 'freshness.p99', 'freshnessP99Ms'),
    freshnessHistogram: histogram(pick(s, 'freshness.histogram', 'freshnessHistogram')),
    requestsPerSec: n(s, 'requestsPerSec', 'rates.requests', 'qps'),
    http: str(s, 'http') ?? null,
    pinned: pinOf(s.pinned),
    slice: sliceOf(s.slice),
  };
}

function sliceOf(v: unknown): string | null {
  return isRecord(v) && typeof v.index === 'number' && typeof v.count === 'number'
    ? `${v.index}/${v.count}`
    : null;
}

function pinOf(v: unknown): ServingView['pinned'] {
  if (!isRecord(v) || typeof v.since !== 'number') return null;
  const num = (x: unknown) => (typeof x === 'number' ? x : 0);
  return {
    since: v.since,
    reason: typeof v.reason === 'string' ? v.reason : '',
    logloss: num(v.logloss),
    baseline: num(v.baseline),
    by: typeof v.by === 'string' ? v.by : '',
  };
}

/** Groups discovered actors into the three role views. */
function isHistogram(v: unknown): v is ProgressiveHistogram {
  return (
    isRecord(v) && typeof v.bins === 'number' && Array.isArray(v.counts) && typeof v.lossSum === 'number'
  );
}

/**
 * Merges the workers' mergeable progressive histograms into one cluster-wide figure: cumulative,
 * and over the rolling windows (each worker's last `metrics.window` examples).
 */
export function clusterProgressive(workers: ActorStatus[]): ClusterView['progressive'] {
  const parts = workers.map((w) => w.status.progressiveHistogram).filter(isHistogram);
  if (!parts.length) return null;
  const m = mergeProgressive(parts);
  const finite = (x: number) => (Number.isFinite(x) ? x : null);
  const windows = workers.map((w) => w.status.progressiveWindowHistogram).filter(isHistogram);
  const w = windows.length ? mergeProgressive(windows) : undefined;
  return {
    examples: m.examples,
    auc: finite(m.auc),
    logloss: finite(m.logloss),
    windowAuc: w ? finite(w.auc) : null,
    windowExamples: w ? w.examples : null,
  };
}

export function clusterView(actors: ActorStatus[], cluster?: string): ClusterView {
  const workers = actors.filter((a) => a.role === 'worker');
  return {
    cluster: cluster ?? null,
    at: Date.now(),
    shards: actors.filter((a) => a.role === 'shard').map(shardView),
    workers: workers.map(workerView),
    serving: actors.filter((a) => a.role === 'serving').map(servingView),
    progressive: clusterProgressive(workers),
    deadLetters: sumByReason(workers.map(workerView)),
  };
}

function sumByReason(workers: WorkerView[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const w of workers)
    for (const [r, n] of Object.entries(w.deadLetters ?? {})) out[r] = (out[r] ?? 0) + n;
  return out;
}
