import { z } from 'zod';
import { hashString64 } from './keys.js';
import { subjects } from './subjects.js';

/**
 * Admin commands (checkpoint, restore, drain) travel on their own subject space,
 * `freshet.<cluster>.admin.<role>.<id>.<command>`, so NATS permissions can reserve them for the
 * admin role: actors subscribe to their own commands; only admin users may publish there.
 */
export function adminSubjects(cluster: string) {
  const p = `${subjects(cluster).prefix}.admin`;
  return {
    prefix: p,
    all: `${p}.>`,
    /** Every admin command for one role (what an actor of that role subscribes to). */
    role: (role: 'shard' | 'worker' | 'serving') => `${p}.${role}.>`,
    /** One command to one actor. `id` is its service metadata id (`shard-0`, a worker id...). */
    command: (role: 'shard' | 'worker' | 'serving', id: string, command: AdminCommand) =>
      `${p}.${role}.${id}.${command}`,
  } as const;
}

export const adminCommands = ['checkpoint', 'restore', 'drain', 'forget'] as const;
export type AdminCommand = (typeof adminCommands)[number];

/** JSON body of an admin request (all fields optional; commands ignore what they do not use). */
export const adminRequestSchema = z
  .object({
    /** restore: a checkpoint id/path the actor understands; latest when omitted. */
    checkpoint: z.string().max(4096).optional(),
    /** drain: how long to wait for in-flight work before handing it back (ms). */
    timeoutMs: z.number().int().min(0).max(600_000).optional(),
    /** forget: the user id whose rows (shards) and pending state (workers) go (docs/privacy.md). */
    user: z.string().min(1).max(1024).optional(),
    /** forget on shards: the categorical fields whose value is the user id (default `user`). */
    fields: z.array(z.string().min(1).max(64)).min(1).max(64).optional(),
  })
  .strict();
export type AdminRequest = z.infer<typeof adminRequestSchema>;

/** JSON body of a successful admin reply; failures are error envelopes. */
export const adminReplySchema = z.object({
  ok: z.literal(true),
  command: z.enum(adminCommands),
  id: z.string(),
  /** What the command did, for the operator (e.g. checkpoint bytes, restored version). */
  detail: z.record(z.string(), z.unknown()).default({}),
});
export type AdminReply = z.infer<typeof adminReplySchema>;

/**
 * The cluster-KV key recording that a user was forgotten (`freshet user forget`): a hash of the
 * id, never the id itself, so the record of a deletion keeps no personal data. Workers load these
 * keys at start and drop the user's events while they exist.
 */
export function forgottenUserKey(user: string): string {
  return `${forgottenUserPrefix}${forgottenUserHash(user)}`;
}
export const forgottenUserPrefix = 'forgotten.';
/** The 64-bit hash of a user id as 16 hex digits (what {@link forgottenUserKey} ends with). */
export function forgottenUserHash(user: string): string {
  const out = new Uint32Array(2);
  hashString64(`user\u0003${user}`, out);
  return out[1]!.toString(16).padStart(8, '0') + out[0]!.toString(16).padStart(8, '0');
}
