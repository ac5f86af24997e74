import type { NatsConnection } from 'nats';
import {
  adminReplySchema,
  adminSubjects,
  errorEnvelopeSchema,
  FreshetError,
  type AdminCommand,
  type AdminReply,
  type AdminRequest,
} from '@freshet/protocol';
import { fromNatsError } from '@freshet/nats';
import { discoverActors, type ActorStatus } from '../discovery.js';
import type { RoleName } from '../role-schemas.js';

/** The outcome of one admin command sent to one actor. */
export interface AdminResult {
  role: RoleName;
  id: string;
  ok: boolean;
  detail?: Record<string, unknown>;
  error?: { code: string; message: string };
}

/**
 * Picks the actors an admin command goes to: `actor` by id (any role), else every actor of
 * `roles`. Throws with the ids that do exist when the named actor is not found.
 */
export async function targets(
  nc: NatsConnection,
  cluster: string,
  roles: readonly RoleName[],
  actor?: string,
): Promise<ActorStatus[]> {
  const all = await discoverActors(nc, { cluster });
  if (actor) {
    const hit = all.filter((a) => a.id === actor);
    if (!hit.length) {
      throw new FreshetError(
        'UNAVAILABLE',
        `no actor "${actor}" in cluster "${cluster}" (live: ${all.map((a) => a.id).join(', ') || 'none'}). ` +
          'Check the id with `freshet status`.',
      );
    }
    return hit;
  }
  const picked = all.filter((a) => roles.includes(a.role));
  if (!picked.length) {
    throw new FreshetError(
      'UNAVAILABLE',
      `no ${roles.join('/')} running in cluster "${cluster}". Is the cluster up (\`freshet status --cluster ${cluster}\`)?`,
    );
  }
  return picked;
}

/** Sends one admin command to each target (in parallel) and collects the replies. */
export async function sendAdmin(
  nc: NatsConnection,
  cluster: string,
  actors: ActorStatus[],
  command: AdminCommand,
  body: AdminRequest = {},
  timeoutMs = 30_000,
): Promise<AdminResult[]> {
  const subj = adminSubjects(cluster);
  const data = new TextEncoder().encode(JSON.stringify(body));
  return Promise.all(
    actors.map(async (a): Promise<AdminResult> => {
      const subject = subj.command(a.role, a.id, command);
      try {
        const msg = await nc.request(subject, data, { timeout: timeoutMs });
        const json: unknown = JSON.parse(new TextDecoder().decode(msg.data));
        const env = errorEnvelopeSchema.safeParse(json);
        if (env.success) return { role: a.role, id: a.id, ok: false, error: env.data };
        const reply: AdminReply = adminReplySchema.parse(json);
        return { role: a.role, id: a.id, ok: true, detail: reply.detail };
      } catch (e) {
        const fe = fromNatsError(e, subject);
        const hint =
          fe.code === 'UNAVAILABLE'
            ? ` (${a.id} does not answer ${command} commands: its role does not expose them yet, or it is stopping)`
            : /permission/i.test(fe.message)
              ? ' (admin commands need the admin NATS user: set FRESHET_NATS_USER/FRESHET_NATS_PASS_FILE)'
              : '';
        return { role: a.role, id: a.id, ok: false, error: { code: fe.code, message: fe.message + hint } };
      }
    }),
  );
}

/** Prints results one per line; exit code 1 when any failed. */
export function reportAdmin(command: string, results: AdminResult[], json: boolean): void {
  if (json) process.stdout.write(JSON.stringify({ command, results }) + '\n');
  else {
    for (const r of results) {
      process.stdout.write(
        r.ok
          ? `${command} ${r.id}: ok ${r.detail && Object.keys(r.detail).length ? JSON.stringify(r.detail) : ''}\n`
          : `${command} ${r.id}: FAILED [${r.error?.code}] ${r.error?.message}\n`,
      );
    }
  }
  if (results.some((r) => !r.ok)) process.exitCode = 1;
}
