import { FreshetError } from '@freshet/protocol';

/**
 * The shard index of a StatefulSet pod: the ordinal Kubernetes ends its name with (`shard-1` →
 * 1), read from an environment variable the manifest fills from the pod's name (downward API).
 * One pod template then serves every shard, and a pod keeps its index, and its volume, wherever
 * it is rescheduled. The options must not name a shard too: two sources could disagree.
 */
export function shardIndexFromEnv(
  options: Record<string, unknown>,
  name: string,
  env: NodeJS.ProcessEnv = process.env,
): Record<string, unknown> {
  const flag = `--index-from-env ${name}`;
  const value = env[name];
  if (value === undefined || value === '') {
    throw new FreshetError(
      'CONFIG',
      `${flag}: ${name} is not set (in Kubernetes: env ${name} from valueFrom.fieldRef.fieldPath: metadata.name)`,
    );
  }
  const m = /-(\d{1,9})$/.exec(value);
  if (!m) {
    throw new FreshetError(
      'CONFIG',
      `${flag}: ${name}=${value} does not end in -<ordinal> (a StatefulSet pod's name, like shard-0)`,
    );
  }
  if (options.shard !== undefined) {
    throw new FreshetError(
      'CONFIG',
      `${flag}: the options name shard ${JSON.stringify(options.shard)} too; remove "shard" from them`,
    );
  }
  const shard = Number(m[1]);
  if (typeof options.shards === 'number' && shard >= options.shards) {
    throw new FreshetError(
      'CONFIG',
      `${flag}: ${name}=${value} is shard ${shard}, but the options say shards: ${options.shards} ` +
        `(the StatefulSet's replicas must equal shards)`,
    );
  }
  return { ...options, shard };
}
