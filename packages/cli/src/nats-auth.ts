import { join } from 'node:path';
import { nkeys } from 'nats';
import { routeUrl, type RouteAuth, type RouteTls } from '@freshet/nats';
import { adminSubjects, assertClusterName, subjects } from '@freshet/protocol';
import { privateDir, writePrivateFile } from './private-files.js';

/**
 * NATS authorization for a Freshet cluster: one nkey user per role with the least permissions its
 * work needs, written against the same subject builder the roles use, so the two cannot drift.
 *
 * - publisher: publish feedback events (and read the stream's info), store event dictionaries;
 *   nothing else.
 * - labeller: publish pre-labelled `example` events (the labels subjects) and feedback. Workers
 *   dead-letter an `example` on a feedback subject, so labels come from labellers only.
 * - app: call score/rank (applications that rank with the model); nothing else.
 * - worker: consume the feedback stream, call the shards (pull/push), dead-letter, clocks, KV.
 * - shard: answer pull/push/snapshot/status, publish deltas, checkpoints (KV, object store).
 * - serving: read deltas, request snapshots, answer score/rank.
 * - admin: everything of its cluster, the service API, admin commands and JetStream management
 *   of its cluster's streams and buckets.
 *
 * Every role subscribes to replies on its own inbox prefix only (`_INBOX_<cluster>_<role>.>`,
 * what the roles pass as nats.js `inboxPrefix`), so no role can read another's replies (pulled
 * weights, acks, ranks). Roles that answer requests get `allow_responses`. Users are nkeys: the
 * server config holds public keys only, the seeds live in files next to it (mode 0600), and no
 * secret crosses the wire (challenge-response).
 */

export const natsRoles = ['publisher', 'labeller', 'app', 'worker', 'shard', 'serving', 'admin'] as const;
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
  return [
    `$O.${bucket}.>`,
    `$JS.API.STREAM.CREATE.OBJ_${bucket}`,
    // deleting an object (a shard keeps its newest N checkpoints) purges its chunks
    `$JS.API.STREAM.PURGE.OBJ_${bucket}`,
    ...streamUse(`OBJ_${bucket}`),
  ];
}

/** The permissions of each role in one cluster. */
export function rolePermissions(cluster: string): Record<NatsRole, RolePermissions> {
  const s = subjects(cluster);
  const a = adminSubjects(cluster);
  const inbox = (role: NatsRole) => `${s.inboxPrefix(role)}.>`;
  const serviceApi = '$SRV.>';
  // ...and the dictionaries of compressed events: a publisher stores its own before it sends
  const feedbackPublish = [
    `${s.prefix}.fb.*`,
    '$JS.API.INFO',
    `$JS.API.STREAM.INFO.${s.feedbackStream}`,
    ...kvUse(s.dictBucket),
  ];
  return {
    publisher: { publish: feedbackPublish, subscribe: [inbox('publisher')], allowResponses: false },
    labeller: {
      publish: [`${s.prefix}.lb.*`, ...feedbackPublish],
      subscribe: [inbox('labeller')],
      allowResponses: false,
    },
    app: { publish: [s.score, s.rank], subscribe: [inbox('app')], allowResponses: false },
    worker: {
      publish: [
        `${s.prefix}.ps.*.pull`,
        `${s.prefix}.ps.*.push`,
        `${s.prefix}.ps.*.status`,
        `${s.prefix}.psh.*.pull`,
        `${s.prefix}.psh.*.push`,
        s.deadLetter,
        s.workerClockAll,
        '$JS.API.INFO',
        ...streamUse(s.feedbackStream),
        ...kvUse(s.kvBucket),
        ...kvUse(s.dictBucket),
      ],
      subscribe: [inbox('worker'), serviceApi, s.workerClockAll, `${s.prefix}.worker.>`, a.role('worker')],
      allowResponses: true,
    },
    shard: {
      publish: [
        s.deltaAll,
        s.hostDeltaAll,
        '$JS.API.INFO',
        ...kvUse(s.kvBucket),
        ...objectStoreUse(s.objectStore),
      ],
      subscribe: [
        inbox('shard'),
        serviceApi,
        `${s.prefix}.ps.>`,
        `${s.prefix}.psh.>`,
        s.workerClockAll,
        a.role('shard'),
      ],
      allowResponses: true,
    },
    serving: {
      publish: [
        `${s.prefix}.ps.*.snapshot`,
        `${s.prefix}.ps.*.status`,
        // a sliced node asks the other slices for their rows (and answers theirs)
        `${s.prefix}.srows.>`,
        '$JS.API.INFO',
        ...streamUse(`KV_${s.kvBucket}`),
      ],
      subscribe: [
        inbox('serving'),
        serviceApi,
        s.deltaAll,
        s.hostDeltaAll,
        `${s.prefix}.srows.>`,
        s.score,
        s.rank,
        a.role('serving'),
      ],
      allowResponses: true,
    },
    admin: {
      // JetStream management of its own cluster's streams only: another cluster's admin on the
      // same server cannot delete or read this cluster's streams
      publish: [
        `${s.prefix}.>`,
        serviceApi,
        '$JS.API.INFO',
        '$JS.API.STREAM.NAMES',
        '$JS.API.STREAM.LIST',
        ...[
          s.feedbackStream,
          s.deadLetterStream,
          `KV_${s.kvBucket}`,
          `KV_${s.dictBucket}`,
          `OBJ_${s.objectStore}`,
        ].flatMap((stream) => [
          `$JS.API.STREAM.*.${stream}`,
          `$JS.API.STREAM.MSG.*.${stream}`,
          ...streamUse(stream),
        ]),
        `$KV.${s.kvBucket}.>`,
        `$KV.${s.dictBucket}.>`,
        `$O.${s.objectStore}.>`,
      ],
      // it calls the service API (replies come to its inbox); it does not listen to it
      subscribe: [inbox('admin'), `${s.prefix}.>`],
      allowResponses: true,
    },
  };
}

export interface RoleCredentials {
  /** The user's public nkey (`U...`): what the server config lists. */
  nkey: string;
  /** The user's nkey seed (`SU...`): the secret the role connects with (`nkeySeedFile`). */
  seed: string;
  /** The reply-inbox prefix the role must connect with. */
  inboxPrefix: string;
}

export interface GeneratedAuth {
  cluster: string;
  users: Record<NatsRole, RoleCredentials>;
  /** The `users = [...]` entries (to combine several clusters in one server). */
  entries: string[];
  /** A complete `authorization { ... }` block for nats-server.conf (public keys only). */
  config: string;
}

const q = (v: string) => JSON.stringify(v);

/** nats.js re-exports nkeys.js, whose types do not resolve through it: the part used here. */
interface KeyPair {
  getSeed(): Uint8Array;
  getPublicKey(): string;
}
const nk = nkeys as unknown as { createUser(): KeyPair; fromSeed(seed: Uint8Array): KeyPair };

/** Generates one nkey user per role with its permissions for one cluster. */
export function generateNatsAuth(opts: {
  cluster: string;
  /** Fixed seeds (tests); fresh random nkeys otherwise. */
  seeds?: Partial<Record<NatsRole, string>>;
}): GeneratedAuth {
  assertClusterName(opts.cluster);
  const s = subjects(opts.cluster);
  const perms = rolePermissions(opts.cluster);
  const users = {} as Record<NatsRole, RoleCredentials>;
  const entries: string[] = [];
  for (const role of natsRoles) {
    const given = opts.seeds?.[role];
    const kp = given ? nk.fromSeed(new TextEncoder().encode(given)) : nk.createUser();
    const seed = new TextDecoder().decode(kp.getSeed());
    const nkey = kp.getPublicKey();
    users[role] = { nkey, seed, inboxPrefix: s.inboxPrefix(role) };
    const p = perms[role];
    entries.push(
      `# ${opts.cluster} ${role}\n    { nkey: ${q(nkey)}, permissions: { ` +
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

/**
 * The route part of a `cluster { ... }` block (include it there): the secret every route must
 * present, and the routes to the peers presenting it. A server without it cannot join as a route.
 * With `tls`, routes also speak mutual TLS: a peer must present a certificate from the CA.
 */
export function clusterAuthBlock(
  auth: RouteAuth,
  routes: Array<{ host: string; port: number }>,
  tls?: RouteTls,
): string {
  return (
    `authorization { user: ${q(auth.user)}, password: ${q(auth.password)}, timeout: 2 }\n` +
    (tls ? tlsBlock({ ...tls, verify: true }) : '') +
    `routes: [\n${routes.map((r) => `  ${q(routeUrl(r.host, r.port, auth))}`).join('\n')}\n]\n`
  );
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

/**
 * Writes a generated auth into `dir` (made 0700): `auth.conf` (include it from nats-server.conf),
 * one `<role>.nk` seed file per role, and `cluster.conf` (include it inside the `cluster` block)
 * when a route secret is given, with the route TLS block when `cluster.tls` names the files.
 * Every file is 0600, also when it existed before.
 */
export async function writeAuthFiles(
  dir: string,
  auth: GeneratedAuth,
  cluster?: { routeAuth: RouteAuth; routes: Array<{ host: string; port: number }>; tls?: RouteTls },
): Promise<string[]> {
  await privateDir(dir);
  const files: Array<[string, string]> = [['auth.conf', auth.config]];
  for (const role of natsRoles) files.push([`${role}.nk`, auth.users[role].seed + '\n']);
  if (cluster) files.push(['cluster.conf', clusterAuthBlock(cluster.routeAuth, cluster.routes, cluster.tls)]);
  for (const [name, text] of files) await writePrivateFile(join(dir, name), text);
  return files.map(([name]) => name);
}
