import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { NatsConnection } from 'nats';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { FreshetError } from '@freshet/protocol';
import { clusterView, servingView, shardView, workerView, type ClusterView } from './actor-view.js';
import { discoverActors, type ActorStatus } from './discovery.js';
import type { RoleName } from './role-schemas.js';

/**
 * Prometheus metrics for Freshet actors, fed from the same status objects the service API
 * reports. Names are `freshet_<role>_<what>` with labels {cluster, role, id}; totals are
 * counters (`_total`), levels gauges. Two ways to expose them:
 * - {@link createActorMetrics}: inside one role process, reading its status on every scrape;
 * - {@link createClusterMetrics}: one exporter for a whole cluster, reading every actor through
 *   the service API on every scrape (used by `freshet up` and `freshet dashboard`).
 */

type Labels = { cluster: string; role: RoleName; id: string };
const labelNames = ['cluster', 'role', 'id'] as const;

interface Instruments {
  up: Gauge;
  shardRows: Gauge;
  shardMemory: Gauge;
  shardVersion: Gauge;
  shardUpdateRate: Gauge;
  shardStaleness: Gauge;
  shardRejects: Counter;
  shardEvictions: Counter;
  shardLastCheckpoint: Gauge;
  shardDeltaSeq: Gauge;
  shardHostMessages: Counter;
  shardHostBusy: Gauge;
  workerExamplesRate: Gauge;
  workerExamples: Counter;
  workerAuc: Gauge;
  workerLogloss: Gauge;
  workerLag: Gauge;
  workerPartitions: Gauge;
  workerAcksConfirming: Gauge;
  workerAckRetries: Counter;
  workerAppliedRedeliveries: Counter;
  workerDeadLetters: Counter;
  workerHostMessages: Counter;
  workerShardRequests: Counter;
  workerHostFailures: Counter;
  workerHostLinger: Gauge;
  servingVersion: Gauge;
  servingFreshness: Gauge;
  servingRequestRate: Gauge;
}

function instruments(registry: Registry): Instruments {
  const g = (name: string, help: string, extra: string[] = []) =>
    new Gauge({ name, help, labelNames: [...labelNames, ...extra], registers: [registry] });
  const c = (name: string, help: string) =>
    new Counter({ name, help, labelNames: [...labelNames], registers: [registry] });
  return {
    up: g('freshet_actor_up', 'Actor answered the last status request (1) or not (0).'),
    shardRows: g('freshet_shard_rows', 'Rows held by the shard.'),
    shardMemory: g('freshet_shard_memory_bytes', 'Resident memory of the shard process.'),
    shardVersion: g('freshet_shard_version', 'Shard parameter version (updates applied).'),
    shardUpdateRate: g('freshet_shard_updates_per_second', 'Pushes applied per second.'),
    shardStaleness: g('freshet_shard_staleness', 'Staleness τ of applied pushes (versions).', ['quantile']),
    shardRejects: c('freshet_shard_rejects_total', 'Pushes rejected (stale, non-finite, malformed).'),
    shardEvictions: c('freshet_shard_evictions_total', 'Rows evicted (TTL).'),
    shardLastCheckpoint: g('freshet_shard_last_checkpoint_timestamp_seconds', 'Time of the last checkpoint.'),
    shardDeltaSeq: g('freshet_shard_delta_seq', 'Sequence number of the last published delta.'),
    workerExamplesRate: g('freshet_worker_examples_per_second', 'Examples trained per second.'),
    workerExamples: c('freshet_worker_examples_total', 'Examples trained.'),
    workerAuc: g('freshet_worker_progressive_auc', 'Progressive-validation AUC (scored before update).'),
    workerLogloss: g('freshet_worker_progressive_logloss', 'Progressive-validation logloss.'),
    workerLag: g('freshet_worker_lag', 'Feedback events waiting in its partitions.'),
    workerPartitions: g('freshet_worker_partitions', 'Partitions assigned to the worker.'),
    workerAcksConfirming: g(
      'freshet_worker_acks_confirming',
      'Acks of applied events awaiting the consumer leader (grows while it is away).',
    ),
    workerAckRetries: c('freshet_worker_ack_retries_total', 'Ack confirmations sent again.'),
    workerAppliedRedeliveries: c(
      'freshet_worker_applied_redeliveries_total',
      'Redeliveries of already-applied events, acked instead of trained.',
    ),
    workerDeadLetters: new Counter({
      name: 'freshet_worker_dead_letters_total',
      help: 'Events the worker dead-lettered, by reason code.',
      labelNames: [...labelNames, 'reason'],
      registers: [registry],
    }),
    shardHostMessages: new Counter({
      name: 'freshet_shard_host_messages_total',
      help: "Host messages a shard host answered, by thread: the host's own, or shard thread 0, 1, …",
      labelNames: [...labelNames, 'thread'],
      registers: [registry],
    }),
    shardHostBusy: g(
      'freshet_shard_host_thread_busy',
      "Event-loop busy share of a shard host's threads over the last second: its own, or shard thread 0, 1, …",
      ['thread'],
    ),
    workerHostMessages: c(
      'freshet_worker_host_messages_total',
      'Host messages sent: pulls or pushes for several shards of one shard host in one message.',
    ),
    workerShardRequests: new Counter({
      name: 'freshet_worker_shard_requests_total',
      help: 'Pulls and pushes sent to shards, by path: inside a host message, or to the shard directly.',
      labelNames: [...labelNames, 'path'],
      registers: [registry],
    }),
    workerHostFailures: c(
      'freshet_worker_host_failures_total',
      "Host messages that got no reply (that host's shards are then asked directly for a while).",
    ),
    workerHostLinger: g(
      'freshet_worker_host_linger_seconds',
      "How long the worker's last host message waited for more batches' parts (hostRouting.lingerMs or hostMsgsPerS).",
    ),
    servingVersion: g('freshet_serving_version', 'Parameter version the serving node scores with.'),
    servingFreshness: g('freshet_serving_freshness_seconds', 'Event-to-serving freshness.', ['quantile']),
    servingRequestRate: g('freshet_serving_requests_per_second', 'Score/rank requests per second.'),
  };
}

function setCounter(c: Counter, labels: Labels, value: number | null): void {
  // Counters are fed absolute totals from status: move them to the reported value.
  if (value === null) return;
  c.remove(labels);
  c.inc(labels, Math.max(0, value));
}

function setGauge(g: Gauge, labels: Record<string, string>, value: number | null): void {
  if (value === null) g.remove(labels);
  else g.set(labels, value);
}

/** Writes one actor's status into the instruments. */
function record(m: Instruments, a: ActorStatus, cluster: string): void {
  const labels: Labels = { cluster: a.cluster || cluster, role: a.role, id: a.id };
  m.up.set(labels, 1);
  if (a.role === 'shard') {
    const v = shardView(a);
    setGauge(m.shardRows, labels, v.rows);
    setGauge(m.shardMemory, labels, v.memoryBytes);
    setGauge(m.shardVersion, labels, v.version);
    setGauge(m.shardUpdateRate, labels, v.updatesPerSec);
    setGauge(m.shardStaleness, { ...labels, quantile: '0.5' }, v.stalenessP50);
    setGauge(m.shardStaleness, { ...labels, quantile: '0.99' }, v.stalenessP99);
    setCounter(m.shardRejects, labels, v.rejects);
    setCounter(m.shardEvictions, labels, v.evictions);
    setGauge(m.shardLastCheckpoint, labels, v.lastCheckpoint === null ? null : v.lastCheckpoint / 1000);
    setGauge(m.shardDeltaSeq, labels, v.deltaSeq);
  } else if (a.role === 'worker') {
    const v = workerView(a);
    setGauge(m.workerExamplesRate, labels, v.examplesPerSec);
    setCounter(m.workerExamples, labels, v.examples);
    setGauge(m.workerAuc, labels, v.auc);
    setGauge(m.workerLogloss, labels, v.logloss);
    setGauge(m.workerLag, labels, v.lag);
    setGauge(m.workerPartitions, labels, v.partitions.length);
    setGauge(m.workerAcksConfirming, labels, v.acksConfirming);
    setCounter(m.workerAckRetries, labels, v.ackRetries);
    setCounter(m.workerAppliedRedeliveries, labels, v.appliedRedeliveries);
    for (const [reason, n] of Object.entries(v.deadLetters ?? {})) {
      setCounter(m.workerDeadLetters, { ...labels, reason } as Labels, n);
    }
    setCounter(m.workerHostMessages, labels, v.hostMessages);
    setCounter(m.workerShardRequests, { ...labels, path: 'host' } as Labels, v.hostParts);
    setCounter(m.workerShardRequests, { ...labels, path: 'direct' } as Labels, v.directRequests);
    setCounter(m.workerHostFailures, labels, v.hostFailures);
    setGauge(m.workerHostLinger, labels, v.hostLingerMs === null ? null : v.hostLingerMs / 1000);
  } else {
    const v = servingView(a);
    setGauge(m.servingVersion, labels, v.version);
    const s = (x: number | null) => (x === null ? null : x / 1000);
    setGauge(m.servingFreshness, { ...labels, quantile: '0.5' }, s(v.freshnessP50Ms));
    setGauge(m.servingFreshness, { ...labels, quantile: '0.99' }, s(v.freshnessP99Ms));
    setGauge(m.servingRequestRate, labels, v.requestsPerSec);
  }
}

/** Metrics of one role process; `status()` is read on every scrape. */
export function createActorMetrics(opts: {
  cluster: string;
  role: RoleName;
  id: string;
  status: () => Record<string, unknown>;
  /** Node process metrics (CPU, heap, GC) with the prefix `freshet_<role>_`. Default true. */
  processMetrics?: boolean;
}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ cluster: opts.cluster, role: opts.role, id: opts.id });
  if (opts.processMetrics !== false)
    collectDefaultMetrics({ register: registry, prefix: `freshet_${opts.role}_` });
  const m = instruments(registry);
  let hosted = new Set<string>();
  const refresh = () => {
    const actor = (id: string, status: Record<string, unknown>): ActorStatus => ({
      role: opts.role,
      id,
      cluster: opts.cluster,
      serviceId: id,
      version: '',
      started: '',
      metadata: {},
      status,
      endpoints: [],
    });
    const status = opts.status();
    // a shard host: each shard it runs now is a shard of its own (id shard-<n>), as when it
    // ran as its own process; one that moved away reads as down here
    if (status.role === 'shard-host' && Array.isArray(status.running)) {
      // per thread of the host: its own, then each shard thread
      const perThread = (v: unknown, set: (labels: Labels, n: number) => void) => {
        if (!Array.isArray(v)) return;
        (v as number[]).forEach((n, i) => {
          const thread = i === 0 ? 'host' : String(i - 1);
          set({ cluster: opts.cluster, role: opts.role, id: opts.id, thread } as Labels, n);
        });
      };
      perThread(status.hostMessages, (l, n) => setCounter(m.shardHostMessages, l, n));
      perThread(status.busy, (l, n) => setGauge(m.shardHostBusy, l, n));
      const now = new Set<string>();
      for (const s of status.running as Array<Record<string, unknown>>) {
        const id = `shard-${String(s.shard)}`;
        now.add(id);
        record(m, actor(id, s), opts.cluster);
      }
      for (const id of hosted) if (!now.has(id)) m.up.set({ cluster: opts.cluster, role: opts.role, id }, 0);
      hosted = now;
      return;
    }
    record(m, actor(opts.id, status), opts.cluster);
  };
  const orig = registry.metrics.bind(registry);
  registry.metrics = async () => {
    refresh();
    return orig();
  };
  return registry;
}

/** A cluster-wide exporter: every scrape asks every actor for its status. */
export interface ClusterMetrics {
  registry: Registry;
  /** The last view collected (for the dashboard). */
  lastView(): ClusterView | undefined;
  /** Collects now (the dashboard polls with it). */
  refresh(): Promise<ClusterView>;
}

export function createClusterMetrics(nc: NatsConnection, opts: { cluster?: string } = {}): ClusterMetrics {
  const registry = new Registry();
  const m = instruments(registry);
  const scrapes = new Counter({
    name: 'freshet_exporter_scrapes_total',
    help: 'Status collections through the service API.',
    registers: [registry],
  });
  let last: ClusterView | undefined;
  const seen = new Map<string, Labels>();
  const refresh = async () => {
    const actors = await discoverActors(nc, opts.cluster === undefined ? {} : { cluster: opts.cluster });
    scrapes.inc();
    const now = new Set<string>();
    for (const a of actors) {
      record(m, a, opts.cluster ?? '');
      const labels: Labels = { cluster: a.cluster || (opts.cluster ?? ''), role: a.role, id: a.id };
      const key = JSON.stringify(labels);
      now.add(key);
      seen.set(key, labels);
    }
    // Actors that went away report up=0 rather than vanishing, so alerts can fire on them.
    for (const [key, labels] of seen) if (!now.has(key)) m.up.set(labels, 0);
    last = clusterView(actors, opts.cluster);
    return last;
  };
  const orig = registry.metrics.bind(registry);
  registry.metrics = async () => {
    await refresh();
    return orig();
  };
  return { registry, lastView: () => last, refresh };
}

export interface MetricsServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (Prometheus text format). Binds to 127.0.0.1 unless `host` says otherwise:
 * exposing metrics beyond the machine is an explicit choice.
 */
export async function serveMetrics(
  registry: Registry,
  opts: { host?: string; port?: number } = {},
): Promise<MetricsServer> {
  const host = opts.host ?? '127.0.0.1';
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (e: unknown) => res.writeHead(503, { 'content-type': 'text/plain' }).end(`${(e as Error).message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new FreshetError(
          'CONFIG',
          `cannot serve metrics on ${host}:${opts.port ?? 0}: ${e.message}` +
            (e.code === 'EADDRINUSE' ? ' (port in use: pick another with --metrics-port, or 0 for any)' : ''),
        ),
      ),
    );
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/metrics`,
    port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/**
 * One call for a role entry point: Prometheus metrics of this process (its status read on every
 * scrape, plus Node process metrics) served on `host:port` (loopback by default).
 */
export async function serveActorMetrics(opts: {
  cluster: string;
  role: RoleName;
  id: string;
  status: () => Record<string, unknown>;
  host?: string;
  port?: number;
}): Promise<MetricsServer> {
  const { host, port, ...actor } = opts;
  return serveMetrics(createActorMetrics(actor), {
    ...(host ? { host } : {}),
    ...(port !== undefined ? { port } : {}),
  });
}
