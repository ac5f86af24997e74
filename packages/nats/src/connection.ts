import { readFileSync } from 'node:fs';
import {
  connect,
  createInbox,
  credsAuthenticator,
  nkeyAuthenticator,
  type ConnectionOptions,
  type NatsConnection,
} from 'nats';
import { z } from 'zod';

/**
 * Connection options shared by every role. Secrets come from files or the environment in entry
 * points, never from code or config files checked into a repo.
 */
export const natsOptionsSchema = z.object({
  servers: z.union([z.string(), z.array(z.string()).min(1)]).default('nats://127.0.0.1:4222'),
  user: z.string().optional(),
  pass: z.string().optional(),
  token: z.string().optional(),
  /** A NATS .creds file (JWT + nkey seed). */
  credsFile: z.string().optional(),
  /** A file holding a user nkey seed (`SU...`), as `freshet config auth` writes one per role. */
  nkeySeedFile: z.string().optional(),
  /**
   * Prefix of this connection's reply inboxes. Roles default to `_INBOX_<cluster>_<role>`, the
   * only inboxes the generated NATS permissions let them subscribe to.
   */
  inboxPrefix: z
    .string()
    .regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, 'subject tokens without wildcards')
    .optional(),
  /** TLS: CA file to trust (and client cert/key for mutual TLS). */
  tls: z
    .object({
      caFile: z.string().optional(),
      certFile: z.string().optional(),
      keyFile: z.string().optional(),
    })
    .optional(),
});
export type NatsOptions = z.infer<typeof natsOptionsSchema>;
export type NatsOptionsInput = z.input<typeof natsOptionsSchema>;

/**
 * Connects with reconnects forever (actors outlive server restarts) and a recognisable name.
 * `defaults` fill what the options leave out (a role passes its own inbox prefix).
 */
export async function connectNats(
  input: NatsOptionsInput,
  name: string,
  defaults: { inboxPrefix?: string } = {},
): Promise<NatsConnection> {
  const o = natsOptionsSchema.parse({ ...defaults, ...dropUndefined(input) });
  const opts: ConnectionOptions = {
    servers: o.servers,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
    // nats.js builds an Error (a stack capture) for every request, to decorate a timeout: 3% of
    // a worker's busy time under load. Failures become FreshetErrors naming the subject instead
    // (fromNatsError), which is what the logs show.
    noAsyncTraces: true,
  };
  if (o.inboxPrefix !== undefined) opts.inboxPrefix = o.inboxPrefix;
  if (o.user !== undefined) opts.user = o.user;
  if (o.pass !== undefined) opts.pass = o.pass;
  if (o.token !== undefined) opts.token = o.token;
  if (o.credsFile) opts.authenticator = credsAuthenticator(readFileSync(o.credsFile));
  else if (o.nkeySeedFile) {
    opts.authenticator = nkeyAuthenticator(
      new TextEncoder().encode(readFileSync(o.nkeySeedFile, 'utf8').trim()),
    );
  }
  if (o.tls) {
    opts.tls = {};
    if (o.tls.caFile) opts.tls.caFile = o.tls.caFile;
    if (o.tls.certFile) opts.tls.certFile = o.tls.certFile;
    if (o.tls.keyFile) opts.tls.keyFile = o.tls.keyFile;
  }
  return connect(opts);
}

/** NATS options from FRESHET_NATS_* environment variables; for entry points only. */
export function natsOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): NatsOptionsInput {
  const o: NatsOptionsInput = {};
  if (env.FRESHET_NATS_URL) o.servers = env.FRESHET_NATS_URL.split(',');
  if (env.FRESHET_NATS_USER) o.user = env.FRESHET_NATS_USER;
  if (env.FRESHET_NATS_PASS_FILE) o.pass = readFileSync(env.FRESHET_NATS_PASS_FILE, 'utf8').trim();
  else if (env.FRESHET_NATS_PASS) o.pass = env.FRESHET_NATS_PASS;
  if (env.FRESHET_NATS_TOKEN) o.token = env.FRESHET_NATS_TOKEN;
  if (env.FRESHET_NATS_CREDS) o.credsFile = env.FRESHET_NATS_CREDS;
  if (env.FRESHET_NATS_NKEY_FILE) o.nkeySeedFile = env.FRESHET_NATS_NKEY_FILE;
  if (env.FRESHET_NATS_INBOX_PREFIX) o.inboxPrefix = env.FRESHET_NATS_INBOX_PREFIX;
  if (env.FRESHET_NATS_CA) o.tls = { caFile: env.FRESHET_NATS_CA };
  return o;
}

function dropUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * A fresh reply inbox under the connection's own inbox prefix. Hand-made subscriptions for
 * replies (pull feeds, confirmed acks) use this, never nats.js's bare `createInbox()`, whose
 * `_INBOX.` a role with per-role inbox permissions may not subscribe to.
 */
export function newInbox(nc: NatsConnection): string {
  const prefix = (nc as unknown as { options?: { inboxPrefix?: string } }).options?.inboxPrefix;
  return createInbox(prefix);
}
