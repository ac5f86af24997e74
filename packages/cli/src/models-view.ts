import type { NatsConnection } from 'nats';
import { clusterProgressive } from './actor-view.js';
import { discoverActors, type ActorStatus } from './discovery.js';

/**
 * Several models side by side (docs/multi-model.md): the live cluster and the clusters that
 * learn from its feedback stream, each with its own workers' progressive metrics, what the live
 * cluster's serving nodes report of it (requests served, shadow comparison) and its served CTR
 * (joined by the live cluster's workers, which see every impression once).
 */
export interface ModelView {
  cluster: string;
  /** `live` for the cluster asked about; otherwise how its serving nodes use it (canary over shadow). */
  role: 'live' | 'shadow' | 'canary' | 'not served';
  /** Canary share of users (0 otherwise). */
  fraction: number;
  /** The stream its workers learn from (null: no worker answered). */
  feedbackCluster: string | null;
  workers: number;
  examples: number | null;
  auc: number | null;
  logloss: number | null;
  windowAuc: number | null;
  /** Requests the live cluster's serving nodes answered with it. */
  served: number;
  /** Impressions marked `meta.servedBy: <cluster>` and their positives. */
  impressions: number;
  positives: number;
  ctr: number | null;
  /** Where it is a shadow: requests compared, top-1 agreement, mean |score difference| (all nodes). */
  shadow: { compared: number; top1Agreement: number | null; meanAbsDiff: number | null } | null;
}

interface VariantReport {
  cluster?: unknown;
  mode?: unknown;
  fraction?: unknown;
  shadow?: { compared?: unknown; top1Agreement?: unknown; absDiff?: { mean?: unknown; count?: unknown } };
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
const rec = (v: unknown): Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};

/** One row per model: `live` is the live cluster's actors, `others` each other cluster's. */
export function modelsView(
  liveCluster: string,
  live: readonly ActorStatus[],
  others: Readonly<Record<string, readonly ActorStatus[]>>,
): ModelView[] {
  const liveServing = live.filter((a) => a.role === 'serving');
  const liveWorkers = live.filter((a) => a.role === 'worker');
  const servedCtr = new Map<string, { impressions: number; positives: number }>();
  for (const w of liveWorkers)
    for (const [m, c] of Object.entries(rec(w.status.served))) {
      const t = servedCtr.get(m) ?? { impressions: 0, positives: 0 };
      t.impressions += num(rec(c).impressions);
      t.positives += num(rec(c).positives);
      servedCtr.set(m, t);
    }
  const row = (cluster: string, actors: readonly ActorStatus[]): ModelView => {
    const workers = actors.filter((a) => a.role === 'worker');
    const p = clusterProgressive([...workers]);
    let served = 0;
    let role: ModelView['role'] = cluster === liveCluster ? 'live' : 'not served';
    let fraction = 0;
    let shadowed = false;
    let compared = 0;
    let agreeSum = 0;
    let agreeN = 0;
    let diffSum = 0;
    let diffN = 0;
    for (const s of liveServing) {
      served += num(rec(s.status.servedBy)[cluster]);
      const vs = Array.isArray(s.status.variants) ? (s.status.variants as VariantReport[]) : [];
      for (const v of vs) {
        if (v.cluster !== cluster) continue;
        if (v.mode === 'canary') role = 'canary';
        else if (v.mode === 'shadow') {
          shadowed = true;
          if (role !== 'canary') role = 'shadow';
        }
        fraction = Math.max(fraction, num(v.fraction));
        const c = num(v.shadow?.compared);
        compared += c;
        if (typeof v.shadow?.top1Agreement === 'number') {
          agreeSum += v.shadow.top1Agreement * c;
          agreeN += c;
        }
        const dn = num(v.shadow?.absDiff?.count);
        diffSum += num(v.shadow?.absDiff?.mean) * dn;
        diffN += dn;
      }
    }
    const ctr = servedCtr.get(cluster) ?? { impressions: 0, positives: 0 };
    const fb = workers.map((w) => w.status.feedbackCluster).find((x) => typeof x === 'string');
    return {
      cluster,
      role,
      fraction,
      feedbackCluster: typeof fb === 'string' ? fb : null,
      workers: workers.length,
      examples: p?.examples ?? null,
      auc: p?.auc ?? null,
      logloss: p?.logloss ?? null,
      windowAuc: p?.windowAuc ?? null,
      served,
      impressions: ctr.impressions,
      positives: ctr.positives,
      ctr: ctr.impressions > 0 ? ctr.positives / ctr.impressions : null,
      shadow: shadowed
        ? {
            compared,
            top1Agreement: agreeN > 0 ? agreeSum / agreeN : null,
            meanAbsDiff: diffN > 0 ? diffSum / diffN : null,
          }
        : null,
    };
  };
  return [row(liveCluster, live), ...Object.entries(others).map(([c, a]) => row(c, a))];
}

/**
 * The live cluster and the clusters that learn from its stream, side by side
 * (docs/multi-model.md). Each cluster's actors are found separately.
 */
export async function collectModels(
  nc: NatsConnection,
  live: string,
  also: readonly string[],
  maxWaitMs?: number,
): Promise<ModelView[]> {
  const find = (cluster: string) =>
    discoverActors(nc, { cluster, ...(maxWaitMs !== undefined ? { maxWaitMs } : {}) });
  const [liveActors, ...rest] = await Promise.all([find(live), ...also.map(find)]);
  return modelsView(live, liveActors!, Object.fromEntries(also.map((c, i) => [c, rest[i]!])));
}
