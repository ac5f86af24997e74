import { ErrorCode, NatsError, RequestStrategy, type NatsConnection, type ServiceStats } from 'nats';
import { FreshetError, subjects } from '@freshet/protocol';
import { roleNames, type RoleName } from './role-names.js';

/**
 * Finds the live actors of a cluster through the NATS service API (`$SRV.STATS.<name>`): every
 * role registers under `subjects(cluster).serviceName(role)` with metadata {cluster, role, id},
 * and reports its status as endpoint stats data. Nothing but a NATS connection is needed.
 */

/** One live actor as the service API reports it. */
export interface ActorStatus {
  role: RoleName;
  /** The actor's id (`metadata.id`, else `shard-<n>` for shards, else the service instance id). */
  id: string;
  cluster: string;
  /** The NATS service instance id (unique per process). */
  serviceId: string;
  version: string;
  started: string;
  metadata: Record<string, string>;
  /** The actor's status object: its endpoints' stats data merged (role-specific fields). */
  status: Record<string, unknown>;
  /** Requests and errors per endpoint name, from the service API itself. */
  endpoints: Array<{ name: string; subject: string; requests: number; errors: number; lastError?: string }>;
}

export interface DiscoverOptions {
  /** Only actors of this cluster; all clusters when omitted. */
  cluster?: string;
  /** How long to collect replies (ms). */
  maxWaitMs?: number;
  roles?: readonly RoleName[];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function toActor(role: RoleName, s: ServiceStats): ActorStatus {
  const metadata = s.metadata ?? {};
  const status: Record<string, unknown> = {};
  for (const e of s.endpoints ?? []) {
    let data: unknown = e.data;
    if (typeof data === 'string') {
      try {
        data = JSON.parse(data);
      } catch {
        // not JSON: not a status object
      }
    }
    if (isRecord(data)) Object.assign(status, data);
  }
  const id =
    metadata.id ??
    (metadata.shard !== undefined ? `shard-${metadata.shard}` : undefined) ??
    (typeof status.id === 'string' ? status.id : undefined) ??
    s.id;
  return {
    role,
    id,
    cluster: metadata.cluster ?? '',
    serviceId: s.id,
    version: s.version,
    started: s.started,
    metadata,
    status,
    endpoints: (s.endpoints ?? []).map((e) => ({
      name: e.name,
      subject: e.subject,
      requests: e.num_requests,
      errors: e.num_errors,
      ...(e.last_error ? { lastError: e.last_error } : {}),
    })),
  };
}

/** Every live actor (optionally of one cluster), sorted by role and id. */
export async function discoverActors(nc: NatsConnection, opts: DiscoverOptions = {}): Promise<ActorStatus[]> {
  const client = nc.services.client({ strategy: RequestStrategy.Timer, maxWait: opts.maxWaitMs ?? 400 });
  // Service names do not carry the cluster; metadata does. subjects() validates the name.
  const names = subjects(opts.cluster ?? 'any');
  const out: ActorStatus[] = [];
  await Promise.all(
    (opts.roles ?? roleNames).map(async (role) => {
      try {
        for await (const s of await client.stats(names.serviceName(role))) {
          const a = toActor(role, s);
          if (opts.cluster === undefined || a.cluster === opts.cluster) out.push(a);
        }
      } catch (e) {
        // No responders: no actor of this role is running, which is an answer, not an error.
        if (e instanceof NatsError && (e.code as string) === (ErrorCode.NoResponders as string)) return;
        throw new FreshetError('UNAVAILABLE', `service API request failed: ${(e as Error).message}`, {
          cause: e,
        });
      }
    }),
  );
  const order = (r: RoleName) => roleNames.indexOf(r);
  out.sort((a, b) => order(a.role) - order(b.role) || a.id.localeCompare(b.id, 'en', { numeric: true }));
  return out;
}

/** Reads a number field from a status object by trying a few names (roles name things their way). */
export function num(status: Record<string, unknown>, ...paths: string[]): number | undefined {
  for (const p of paths) {
    let v: unknown = status;
    for (const k of p.split('.')) v = isRecord(v) ? v[k] : undefined;
    if (typeof v === 'number' && Number.isFinite(v)) return v;
  }
  return undefined;
}

/** Reads a string field (see {@link num}). */
export function str(status: Record<string, unknown>, ...paths: string[]): string | undefined {
  for (const p of paths) {
    let v: unknown = status;
    for (const k of p.split('.')) v = isRecord(v) ? v[k] : undefined;
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  }
  return undefined;
}
