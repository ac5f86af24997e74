import type { Msg, NatsConnection, Subscription } from 'nats';
import { connectNats, type ActorLog, type NatsOptionsInput } from '@freshet/nats';
import {
  adminCommands,
  adminRequestSchema,
  adminSubjects,
  FreshetError,
  subjects,
  toErrorEnvelope,
  type AdminCommand,
  type AdminReply,
  type AdminRequest,
} from '@freshet/protocol';

/**
 * The answering side of the admin commands (`freshet checkpoint|restore|drain`), for a role
 * process: it subscribes to `freshet.<cluster>.admin.<role>.<id>.*` on a connection of its own
 * (same credentials as the role; the role's own connection stays private to it) and answers
 * `{ok, command, id, detail}` or an error envelope. One command runs at a time: a second one
 * meanwhile gets OVERLOADED, so an operator cannot interleave a restore with a drain.
 */

/** What a command does; resolves with the reply's `detail`. Throw a FreshetError to refuse. */
export type AdminHandler = (req: AdminRequest) => Promise<Record<string, unknown>>;

export interface RoleAdminOptions {
  nats: NatsOptionsInput;
  cluster: string;
  role: 'shard' | 'worker' | 'serving';
  id: string;
  /** Commands this role supports; the others are answered with a BAD_REQUEST that says so. */
  handlers: Partial<Record<AdminCommand, AdminHandler>>;
  /** Called once a reply went out (flushed), e.g. to exit after a drain. */
  onReplied?: (command: AdminCommand, ok: boolean) => void;
  log?: ActorLog;
}

export interface RoleAdmin {
  /** The subject pattern it answers on. */
  readonly subject: string;
  /** Commands answered so far (ok or not). */
  readonly answered: number;
  close(): Promise<void>;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Connects and starts answering admin commands for one actor. */
export async function serveRoleAdmin(o: RoleAdminOptions): Promise<RoleAdmin> {
  const nc = await connectNats(o.nats, `freshet-admin-${o.role}-${o.id}`, {
    inboxPrefix: subjects(o.cluster).inboxPrefix(o.role),
  });
  return answerAdmin(nc, o, true);
}

/** Like {@link serveRoleAdmin} on an existing connection (closed by close() only when `owns`). */
export function answerAdmin(nc: NatsConnection, o: RoleAdminOptions, owns = false): RoleAdmin {
  const prefix = adminSubjects(o.cluster).prefix;
  const subject = `${prefix}.${o.role}.${o.id}.*`;
  let busy: AdminCommand | undefined;
  let answered = 0;

  const reply = async (
    msg: Msg,
    command: AdminCommand,
    body: AdminReply | ReturnType<typeof toErrorEnvelope>,
  ) => {
    answered++;
    if (msg.reply) {
      msg.respond(enc.encode(JSON.stringify(body)));
      await nc.flush().catch(() => undefined);
    }
    o.onReplied?.(command, 'ok' in body);
  };

  const handle = async (msg: Msg): Promise<void> => {
    const name = msg.subject.slice(msg.subject.lastIndexOf('.') + 1);
    const command = (adminCommands as readonly string[]).includes(name) ? (name as AdminCommand) : undefined;
    if (!command) {
      answered++;
      msg.respond(
        enc.encode(
          JSON.stringify(
            toErrorEnvelope(
              new FreshetError(
                'BAD_REQUEST',
                `unknown admin command "${name}" (known: ${adminCommands.join(', ')})`,
              ),
            ),
          ),
        ),
      );
      return;
    }
    const fail = (e: unknown) => reply(msg, command, toErrorEnvelope(e));
    const handler = o.handlers[command];
    if (!handler) {
      await fail(
        new FreshetError('BAD_REQUEST', `${o.role} ${o.id} does not support ${command}`, {
          retryable: false,
        }),
      );
      return;
    }
    let req: AdminRequest;
    try {
      const text = dec.decode(msg.data).trim();
      req = adminRequestSchema.parse(text ? JSON.parse(text) : {});
    } catch (e) {
      await fail(new FreshetError('BAD_REQUEST', `bad ${command} request: ${(e as Error).message}`));
      return;
    }
    if (busy) {
      await fail(new FreshetError('OVERLOADED', `${o.id} is busy with ${busy}; retry when it is done`));
      return;
    }
    busy = command;
    o.log?.('info', `admin ${command}`, { id: o.id, ...req });
    try {
      const detail = await handler(req);
      busy = undefined;
      await reply(msg, command, { ok: true, command, id: o.id, detail });
    } catch (e) {
      busy = undefined;
      o.log?.('warn', `admin ${command} failed`, { id: o.id, error: (e as Error).message });
      await fail(e);
    }
  };

  const sub: Subscription = nc.subscribe(subject, {
    callback: (err, msg) => {
      if (!err) void handle(msg);
    },
  });
  return {
    subject,
    get answered() {
      return answered;
    },
    async close() {
      sub.unsubscribe();
      if (owns) await nc.drain().catch(() => undefined);
    },
  };
}
