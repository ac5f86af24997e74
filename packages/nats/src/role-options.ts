import { readFileSync } from 'node:fs';
import { FreshetError } from '@freshet/protocol';
import { natsOptionsFromEnv, type NatsOptionsInput } from './connection.js';

/**
 * How every role process receives its options: `--options-json '<json>'` (or `@file.json`) or
 * `--options-file <path>`, parsed here once for the shard, worker and serving entry points and
 * the `freshet shard|worker|serve` commands. The role's own zod schema validates the result.
 */
export interface RoleOptionsSource {
  optionsJson?: string | undefined;
  optionsFile?: string | undefined;
}

/** The `--options-json` / `--options-file` values of an argv. */
export function roleOptionsArgs(argv: readonly string[]): RoleOptionsSource {
  const at = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  return { optionsJson: at('--options-json'), optionsFile: at('--options-file') };
}

/**
 * The role options as an object, with FRESHET_NATS_* settings under the options' own `nats`
 * (the options win field by field): secrets from the environment, servers and the rest from the
 * options, so secrets never travel on a command line. Throws CONFIG with what to pass.
 */
export function readRoleOptions(
  src: RoleOptionsSource,
  envNats: NatsOptionsInput = natsOptionsFromEnv(),
): Record<string, unknown> {
  let text = src.optionsJson;
  if (text?.startsWith('@')) text = readFileSync(text.slice(1), 'utf8');
  else if (!text && src.optionsFile) text = readFileSync(src.optionsFile, 'utf8');
  if (!text) {
    throw new FreshetError(
      'CONFIG',
      'pass the role options with --options-json <json|@file> or --options-file <path>',
    );
  }
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (e) {
    throw new FreshetError('CONFIG', `role options are not JSON: ${(e as Error).message}`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) {
    throw new FreshetError('CONFIG', 'role options must be a JSON object');
  }
  return withEnvNats(o as Record<string, unknown>, envNats);
}

/** `opts` with `envNats` under its own `nats` (the options win field by field). */
export function withEnvNats(
  opts: Record<string, unknown>,
  envNats: NatsOptionsInput,
): Record<string, unknown> {
  const own = opts.nats;
  if (own !== undefined && (typeof own !== 'object' || own === null || Array.isArray(own))) {
    throw new FreshetError('CONFIG', 'role options: nats must be an object');
  }
  return { ...opts, nats: { ...envNats, ...(own as Record<string, unknown> | undefined) } };
}
