import { randomBytes } from 'node:crypto';
import { adminSubjects, assertClusterName, subjects } from '@freshet/protocol';

/**
 * NATS authorization for a Freshet cluster: one user per role with the least permissions its work
 * needs, written against the same subject builder the roles use, so the two cannot drift.
 *
 * - publisher: publish feedback events (and read the stream's info); nothing else.
 * - worker: consume the feedback stream, call the shards (pull/push), dead-letter, clocks, KV.
 * - shard: answer pull/push/snapshot/status, publish deltas, checkpoints (KV, object store).
 * - serving: read deltas, request snapshots, answer score/rank.
 * - admin: everything of its cluster, the service API, admin commands and JetStream management.
 *
 * Every user may subscribe to `_INBOX.>` (replies) and roles that answer requests get
 * `allow_responses`. Passwords are random; they live in files next to the config (mode 0600),
 * never in code or in the cluster config.
 */

export const natsRoles = ['publisher', 'worker', 'shard', 'serving', 'admin'] as const;
export type NatsRole = (typeof natsRoles)[number];

export interface RolePermissions {
  publish: string[];
  subscribe: string[];
  /** May answer requests sent to it (reply subjects it was not granted otherwise). */
  allowResponses: boolean;
}

/** JetStream API subjects for using (not managing) one stream: info, consumers, fetch, ack, get. */
function streamUse(stream: string): string[] {
  return [
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.CONSUMER.*.${stream}`,
    `$JS.API.CONSUMER.*.${stream}.>`,
    `$JS.API.CONSUMER.*.*.${stream}.>`,
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.ACK.${stream}.>`,
    `$JS.FC.${stream}.>`,
  ];
}

/** KV bucket use, including creating it on first start (roles call `views.kv`). */
function kvUse(bucket: string): string[] {
  return [`$KV.${bucket}.>`, `$JS.API.STREAM.CREATE.KV_${bucket}`, ...streamUse(`KV_${bucket}`)];
}

function objectStoreUse(bucket: string): string[] {
  return [`$O.${bucket}.>`, `$JS.API.STREAM.CREATE.OBJ_${bucket}`, ...streamUse(`OBJ_${bucket}`)];
}

/** The permissions of each role in one cluster. */
export function rolePermissions(cluster: string): Record<NatsRole, RolePermissions> {
  const s = subjects(cluster);
  const a = adminSubjects(cluster);
  const inbox = '_INBOX.>';
  const serviceApi = '$SRV.>';
  return {
    publisher: {
      publish: [`${s.prefix}.fb.>`, '$JS.API.INFO', `$JS.API.STREAM.INFO.${s.feedbackStream}`],
      subscribe: [inbox],
      allowResponses: false,
    },
    worker: {
      publish: [
        `${s.prefix}.ps.*.pull`,
        `${s.prefix}.ps.*.push`,
        `${s.prefix}.ps.*.status`,
        s.deadLetter,
        s.workerClockAll,
        '$JS.API.INFO',
        ...streamUse(s.feedbackStream),
        ...kvUse(s.kvBucket),
      ],
      subscribe: [inbox, serviceApi, s.workerClockAll, `${s.prefix}.worker.>`, a.role('worker')],
      allowResponses: true,
    },
    shard: {
      publish: [s.deltaAll, '$JS.API.INFO', ...kvUse(s.kvBucket), ...objectStoreUse(s.objectStore)],
      subscribe: [inbox, serviceApi, `${s.prefix}.ps.>`, s.workerClockAll, a.role('shard')],
      allowResponses: true,
    },
    serving: {
      publish: [
        `${s.prefix}.ps.*.snapshot`,
        `${s.prefix}.ps.*.status`,
        '$JS.API.INFO',
        ...streamUse(`KV_${s.kvBucket}`),
      ],
      subscribe: [inbox, serviceApi, s.deltaAll, s.score, s.rank, a.role('serving')],
      allowResponses: true,
    },
    admin: {
      publish: [
        `${s.prefix}.>`,
        serviceApi,
        '$JS.API.>',
        '$JS.ACK.>',
        `$KV.${s.kvBucket}.>`,
        `$O.${s.objectStore}.>`,
      ],
      subscribe: [inbox, `${s.prefix}.>`, serviceApi],
      allowResponses: true,
    },
  };
}

export interface GeneratedAuth {
  cluster: string;
  users: Record<NatsRole, { user: string; password: string }>;
  /** The `users = [...]` entries (to combine several clusters in one server). */
  entries: string[];
  /** A complete `authorization { ... }` block for nats-server.conf. */
  config: string;
}

const q = (v: string) => JSON.stringify(v);

/** Generates users, random passwords and per-role permissions for one cluster. */
export function generateNatsAuth(opts: {
  cluster: string;
  /** Fixed passwords (tests); random 24-byte ones otherwise. */
  passwords?: Partial<Record<NatsRole, string>>;
}): GeneratedAuth {
  assertClusterName(opts.cluster);
  const perms = rolePermissions(opts.cluster);
  const users = {} as Record<NatsRole, { user: string; password: string }>;
  const entries: string[] = [];
  for (const role of natsRoles) {
    const user = `freshet-${opts.cluster}-${role}`;
    const password = opts.passwords?.[role] ?? randomBytes(24).toString('base64url');
    users[role] = { user, password };
    const p = perms[role];
    entries.push(
      `{ user: ${q(user)}, password: ${q(password)}, permissions: { ` +
        `publish: { allow: [${p.publish.map(q).join(', ')}] }, ` +
        `subscribe: { allow: [${p.subscribe.map(q).join(', ')}] }` +
        (p.allowResponses ? ', allow_responses: true' : '') +
        ' } }',
    );
  }
  return { cluster: opts.cluster, users, entries, config: authorizationBlock(entries) };
}

/** One `authorization` block from the entries of one or more clusters. */
export function authorizationBlock(entries: string[]): string {
  return `authorization {\n  users = [\n    ${entries.join(',\n    ')}\n  ]\n}\n`;
}

/** A nats-server `tls { ... }` block (server side). */
export function tlsBlock(tls: {
  certFile: string;
  keyFile: string;
  caFile?: string;
  verify?: boolean;
}): string {
  const lines = [`  cert_file: ${q(tls.certFile)}`, `  key_file: ${q(tls.keyFile)}`];
  if (tls.caFile) lines.push(`  ca_file: ${q(tls.caFile)}`);
  if (tls.verify) lines.push('  verify: true');
  return `tls {\n${lines.join('\n')}\n}\n`;
}
