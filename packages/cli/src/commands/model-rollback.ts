import { Command } from 'commander';
import type { KV, NatsConnection } from 'nats';
import { FreshetError } from '@freshet/protocol';
import { sendAdmin, targets, type AdminResult } from './admin.js';
import { withAdmin } from './common.js';
import { clusterKv, readTag } from './model-tags.js';

interface Flags {
  nats?: string;
  cluster: string;
  json?: boolean;
  discard?: boolean;
  keepPin?: boolean;
  timeoutMs: string;
}

/** The cluster-KV key of the model pin (serving's `modelPinKey`; docs/model-versions.md). */
export const modelPinKey = 'model-pin';
/** How a restore request names an Object Store object (the shard's OBJECT_STORE_PREFIX). */
const objectStorePrefix = 'object-store:';

/** Deletes the pin; returns the record it held (undefined: not pinned). */
export async function unpinModel(kv: KV): Promise<unknown> {
  const e = await kv.get(modelPinKey);
  if (!e || e.operation !== 'PUT') return undefined;
  await kv.delete(modelPinKey);
  return JSON.parse(new TextDecoder().decode(e.value)) as unknown;
}

/**
 * Rolls every shard back to the tag's checkpoint (admin `restore` with the object's name): each
 * shard fetches and verifies it, then swaps its state and tells serving to resync. Everything
 * learned after the tag is discarded; the events it came from stay acknowledged. Then the pin, if
 * any, is lifted so that serving follows the rolled-back shards (unless `keepPin`).
 */
export async function rollBackToTag(
  nc: NatsConnection,
  cluster: string,
  name: string,
  o: { timeoutMs: number; keepPin?: boolean },
): Promise<{ results: AdminResult[]; unpinned: unknown }> {
  const kv = await clusterKv(nc, cluster);
  const tag = await readTag(kv, name);
  if (!tag)
    throw new FreshetError('BAD_REQUEST', `no tag ${name} in cluster ${cluster}`, { retryable: false });
  const shards = await targets(nc, cluster, ['shard']);
  const count = Number(shards[0]!.metadata.shards ?? shards[0]!.status.shards);
  if (count !== tag.shards) {
    throw new FreshetError(
      'CONFIG',
      `tag ${name} holds ${tag.shards} shards, the cluster runs ${count}: a rollback across a reshard is not supported`,
    );
  }
  const picked = tag.checkpoints.map((c) => {
    const a = shards.find((s) => s.id === `shard-${c.shard}` || s.metadata.shard === String(c.shard));
    if (!a) throw new FreshetError('UNAVAILABLE', `shard ${c.shard} is not running: nothing rolled back`);
    return { actor: a, object: c.object };
  });
  const results = await Promise.all(
    picked.map(
      async (p) =>
        (
          await sendAdmin(
            nc,
            cluster,
            [p.actor],
            'restore',
            { checkpoint: objectStorePrefix + p.object },
            o.timeoutMs,
          )
        )[0]!,
    ),
  );
  const unpinned = results.every((r) => r.ok) && !o.keepPin ? await unpinModel(kv) : undefined;
  return { results, unpinned };
}

/** `freshet model rollback NAME`. */
export function modelRollbackCommand(): Command {
  return new Command('rollback')
    .description(
      'Roll every shard back to a tag; serving follows. What was learned after the tag is discarded',
    )
    .argument('<name>', 'tag name')
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option(
      '--discard',
      'discard what was learned after the tag; consumers stay where they are (the default, and for now the only mode)',
      true,
    )
    .option(
      '--keep-pin',
      'leave a model pin in place (serving keeps its weights until `freshet model unpin`)',
    )
    .option('--json', 'print the result as JSON')
    .option('--timeout-ms <ms>', 'per-shard timeout (fetch, verify, reload)', '120000')
    .action(async (name: string, f: Flags) => {
      await withAdmin(f, 'freshet-model-rollback', async (nc) => {
        const r = await rollBackToTag(nc, f.cluster, name, {
          timeoutMs: Number(f.timeoutMs),
          keepPin: f.keepPin,
        });
        if (f.json) process.stdout.write(JSON.stringify({ command: 'rollback', tag: name, ...r }) + '\n');
        else {
          for (const x of r.results) {
            process.stdout.write(
              x.ok
                ? `rollback ${x.id}: version ${String(x.detail?.versionBefore)} -> ${String(x.detail?.version)}\n`
                : `rollback ${x.id}: FAILED [${x.error?.code}] ${x.error?.message}\n`,
            );
          }
          if (r.unpinned) process.stdout.write('model pin lifted: serving follows the rolled-back shards\n');
        }
        if (r.results.some((x) => !x.ok)) process.exitCode = 1;
      });
    });
}
