import { Command, Option } from 'commander';
import type { NatsConnection } from 'nats';
import { FreshetError } from '@freshet/protocol';
import { clusterView, servingView, type ClusterView } from '../actor-view.js';
import { discoverActors, type ActorStatus } from '../discovery.js';
import { collectModels, type ModelView } from '../models-view.js';
import { aborted, shutdownSignal } from '../signals.js';
import { connectAdmin, fmt, natsUrlsFrom, table } from './common.js';

interface StatusFlags {
  nats?: string;
  cluster?: string;
  json?: boolean;
  watch?: boolean | string;
  waitMs: string;
  also?: string;
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
  const pinned = actors
    .filter((a) => a.role === 'serving')
    .flatMap((a) => {
      const p = servingView(a).pinned;
      return p ? [{ id: a.id, p }] : [];
    });
  if (pinned.length === 0) return null;
  const oldest = pinned.reduce((a, b) => (b.p.since < a.p.since ? b : a));
  return { ...oldest.p, nodes: pinned.map((x) => x.id) };
}

/** Collects the cluster view through the service API, with the model pin. */
export async function collectStatus(
  nc: NatsConnection,
  opts: { cluster?: string; maxWaitMs?: number } = {},
): Promise<ClusterView & { pinned: ModelPinView | null }> {
  const actors = await discoverActors(nc, opts);
  return { ...clusterView(actors, opts.cluster), pinned: modelPinOf(actors) };
}

/** The MODELS table of `freshet status --also`. */
export function renderModels(models: readonly ModelView[]): string {
  const pct = (v: number | null) => (v === null ? '–' : `${(v * 100).toFixed(2)}%`);
  return [
    'MODELS',
    table(
      [
        'CLUSTER',
        'ROLE',
        'LEARNS FROM',
        'WORKERS',
        'EXAMPLES',
        'AUC',
        'LOGLOSS',
        'SERVED',
        'IMPRESSIONS',
        'CTR',
        'SHADOW',
      ],
      models.map((m) => [
        m.cluster,
        m.role === 'canary' ? `canary ${pct(m.fraction)}` : m.role,
        m.feedbackCluster ?? '–',
        fmt.n(m.workers),
        fmt.n(m.examples),
        fmt.n(m.auc, 4),
        fmt.n(m.logloss, 4),
        fmt.n(m.served),
        fmt.n(m.impressions),
        pct(m.ctr),
        m.shadow
          ? `${fmt.n(m.shadow.compared)} compared, top-1 agree ${pct(m.shadow.top1Agreement)}, ` +
            `|Δscore| ${m.shadow.meanAbsDiff === null ? '–' : m.shadow.meanAbsDiff.toFixed(4)}`
          : '–',
      ]),
    ),
    'SERVED: requests its model answered on the live nodes; IMPRESSIONS, CTR: impressions published with ' +
      'meta.servedBy naming it, joined by the live workers.',
  ].join('\n');
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
        ['ID', 'STATE', 'SLICE', 'VERSION', 'FRESH P50', 'FRESH P99', 'REQ/S'],
        v.serving.map((x) => [
          x.id,
          s(x.state),
          x.slice ?? 'all',
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
    .option(
      '--also <clusters>',
      'with --cluster: other models (clusters learning from its stream), comma-separated, side by side',
    )
    .action(async (flags: StatusFlags) => {
      const nc = await connectAdmin(flags, 'freshet-status');
      const where = natsUrlsFrom(flags).join(',');
      const maxWaitMs = Math.max(50, Number(flags.waitMs) || 500);
      const also = (flags.also ?? '')
        .split(',')
        .map((c) => c.trim())
        .filter((c) => c !== '');
      if (also.length > 0 && !flags.cluster) {
        await nc.close().catch(() => undefined);
        throw new FreshetError('CONFIG', '--also needs --cluster (the live model the others learn beside)');
      }
      const once = async () => {
        const v = await collectStatus(nc, {
          ...(flags.cluster ? { cluster: flags.cluster } : {}),
          maxWaitMs,
        });
        const models = also.length > 0 ? await collectModels(nc, flags.cluster!, also, maxWaitMs) : undefined;
        if (flags.json) process.stdout.write(JSON.stringify(models ? { ...v, models } : v) + '\n');
        else
          process.stdout.write(
            `${flags.watch ? '\x1b[2J\x1b[H' : ''}${renderStatus(v, where)}\n` +
              (models ? `\n${renderModels(models)}\n` : ''),
          );
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
