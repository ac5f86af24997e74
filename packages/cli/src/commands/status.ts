import { Command, Option } from 'commander';
import type { NatsConnection } from 'nats';
import { clusterView, type ClusterView } from '../actor-view.js';
import { discoverActors, type ActorStatus } from '../discovery.js';
import { aborted, shutdownSignal } from '../signals.js';
import { connectAdmin, fmt, natsUrlsFrom, table } from './common.js';

interface StatusFlags {
  nats?: string;
  cluster?: string;
  json?: boolean;
  watch?: boolean | string;
  waitMs: string;
}

/** A model pin as the serving nodes report it (docs/model-versions.md). */
export interface ModelPinView {
  since: number;
  reason: string;
  logloss: number;
  baseline: number;
  by: string;
  /** The serving nodes that report it. */
  nodes: string[];
}

/** The pin the serving nodes report (the oldest, when they differ), or null. */
export function modelPinOf(actors: readonly ActorStatus[]): ModelPinView | null {
  let pin: ModelPinView | null = null;
  const nodes: string[] = [];
  for (const a of actors) {
    const p =
      a.role === 'serving' ? (a.status.pinned as Omit<ModelPinView, 'nodes'> | null | undefined) : null;
    if (!p || typeof p.since !== 'number') continue;
    nodes.push(a.id);
    if (!pin || p.since < pin.since) pin = { ...p, nodes };
  }
  return pin;
}

/** Collects the cluster view through the service API, with the model pin. */
export async function collectStatus(
  nc: NatsConnection,
  opts: { cluster?: string; maxWaitMs?: number } = {},
): Promise<ClusterView & { pinned: ModelPinView | null }> {
  const actors = await discoverActors(nc, opts);
  return { ...clusterView(actors, opts.cluster), pinned: modelPinOf(actors) };
}

/** The human-readable status tables. */
export function renderStatus(v: ClusterView & { pinned?: ModelPinView | null }, where: string): string {
  const out: string[] = [];
  const total = v.shards.length + v.workers.length + v.serving.length;
  out.push(
    `Freshet ${v.cluster ? `cluster "${v.cluster}"` : 'clusters'} at ${where}: ` +
      `${v.shards.length} shard(s), ${v.workers.length} worker(s), ${v.serving.length} serving node(s)`,
  );
  if (total === 0) {
    out.push(
      'No actors answered the service API. Start a cluster with `pnpm freshet up`, or check --nats and --cluster.',
    );
    return out.join('\n');
  }
  const s = (x: string | null) => x ?? '–';
  if (v.shards.length) {
    out.push(
      '',
      'SHARDS',
      table(
        [
          'ID',
          'STATE',
          'ROWS',
          'MEMORY',
          'VERSION',
          'UPD/S',
          'STALE P50',
          'STALE P99',
          'REJECTS',
          'EVICTIONS',
          'CHECKPOINT',
          'DELTA SEQ',
        ],
        v.shards.map((x) => [
          x.id,
          s(x.state),
          fmt.n(x.rows),
          fmt.bytes(x.memoryBytes),
          fmt.n(x.version),
          fmt.n(x.updatesPerSec, 1),
          fmt.n(x.stalenessP50, 1),
          fmt.n(x.stalenessP99, 1),
          fmt.n(x.rejects),
          fmt.n(x.evictions),
          fmt.ago(x.lastCheckpoint, v.at),
          fmt.n(x.deltaSeq),
        ]),
      ),
    );
  }
  if (v.workers.length) {
    out.push(
      '',
      'WORKERS',
      table(
        [
          'ID',
          'STATE',
          'PARTITIONS',
          'EX/S',
          'EXAMPLES',
          'AUC',
          'WINDOW AUC',
          'LOGLOSS',
          'BACKEND',
          'LAG',
          'DEAD',
        ],
        v.workers.map((x) => [
          x.id,
          s(x.state),
          x.partitions.length ? x.partitions.join(',') : '–',
          fmt.n(x.examplesPerSec, 1),
          fmt.n(x.examples),
          fmt.n(x.auc, 4),
          x.windowAuc === null ? '–' : `${fmt.n(x.windowAuc, 4)} (last ${fmt.n(x.window)})`,
          fmt.n(x.logloss, 4),
          s(x.backend),
          fmt.n(x.lag),
          x.deadLetters ? fmt.n(Object.values(x.deadLetters).reduce((a, b) => a + b, 0)) : '–',
        ]),
      ),
    );
    const dead = Object.entries(v.deadLetters).sort((a, b) => b[1] - a[1]);
    if (dead.length) {
      out.push(
        `dead letters since the workers started: ${dead.map(([r, n]) => `${r} ${fmt.n(n)}`).join(', ')} ` +
          '(`freshet dlq list` shows what is stored)',
      );
    }
    const c = v.progressive;
    if (c && v.workers.length > 1) {
      out.push(
        `cluster-wide: ${fmt.n(c.examples)} examples, AUC ${fmt.n(c.auc, 4)}, logloss ${fmt.n(c.logloss, 4)}` +
          (c.windowAuc !== null
            ? `, AUC of the last ${fmt.n(c.windowExamples)} ${fmt.n(c.windowAuc, 4)}`
            : ''),
      );
    }
  }
  if (v.serving.length) {
    out.push(
      '',
      'SERVING',
      table(
        ['ID', 'STATE', 'VERSION', 'FRESH P50', 'FRESH P99', 'REQ/S'],
        v.serving.map((x) => [
          x.id,
          s(x.state),
          fmt.n(x.version),
          fmt.ms(x.freshnessP50Ms),
          fmt.ms(x.freshnessP99Ms),
          fmt.n(x.requestsPerSec, 1),
        ]),
      ),
    );
  }
  if (v.pinned) {
    const p = v.pinned;
    out.push(
      '',
      `MODEL PINNED since ${new Date(p.since).toISOString()} (${fmt.ago(p.since, v.at)}) by ${p.by || '?'}: ` +
        `${p.reason}. Serving (${p.nodes.join(', ')}) keeps its weights while training goes on; ` +
        '`freshet model rollback TAG` or `freshet model unpin` ends it (docs/model-versions.md).',
    );
  }
  return out.join('\n');
}

/** `freshet status`: every live shard, worker and serving node, found through the service API. */
export function statusCommand(): Command {
  return new Command('status')
    .description('Show every running shard, worker and serving node (found through the NATS service API)')
    .option(
      '--nats <url>',
      'NATS server URL(s), comma-separated (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)',
    )
    .option('--cluster <name>', 'only this cluster (default: every cluster on the server)')
    .option('--json', 'print one JSON object {shards, workers, serving} for scripts')
    .addOption(new Option('--watch [seconds]', 'refresh until Ctrl-C (default every 2 s)'))
    .option('--wait-ms <ms>', 'how long to collect replies', '500')
    .action(async (flags: StatusFlags) => {
      const nc = await connectAdmin(flags, 'freshet-status');
      const where = natsUrlsFrom(flags).join(',');
      const maxWaitMs = Math.max(50, Number(flags.waitMs) || 500);
      const once = async () => {
        const v = await collectStatus(nc, {
          ...(flags.cluster ? { cluster: flags.cluster } : {}),
          maxWaitMs,
        });
        if (flags.json) process.stdout.write(JSON.stringify(v) + '\n');
        else process.stdout.write(`${flags.watch ? '\x1b[2J\x1b[H' : ''}${renderStatus(v, where)}\n`);
      };
      try {
        if (!flags.watch) {
          await once();
          return;
        }
        const everyMs = Math.max(0.2, typeof flags.watch === 'string' ? Number(flags.watch) || 2 : 2) * 1000;
        const signal = shutdownSignal();
        while (!signal.aborted) {
          await once();
          await Promise.race([aborted(signal), new Promise((r) => setTimeout(r, everyMs))]);
        }
      } finally {
        await nc.close().catch(() => undefined);
      }
    });
}
