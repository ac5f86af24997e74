import { Command } from 'commander';
import { DeliverPolicy, type KV, type NatsConnection } from 'nats';
import { FreshetError } from '@freshet/protocol';
import { discoverActors } from '../discovery.js';
import { sendAdmin, targets, type AdminResult } from './admin.js';
import { withAdmin } from './common.js';
import { clusterKv, liveKeys, readTag, type ModelTag } from './model-tags.js';

interface Flags {
  nats?: string;
  cluster: string;
  json?: boolean;
  discard?: boolean;
  replay?: boolean;
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

/** Batch manifests in the cluster KV (the worker's `mf.<partition>.<slot>` keys). */
const manifestKeys = 'mf.>';

/**
 * What `--replay` needs before anything moves: a tag taken at a clean cut, no worker running
 * (none may hold a batch or a position while the consumers move), and no batch manifest left (a
 * crashed worker's batch, which the next owner would push again on top of the rolled-back
 * state). Throws BAD_REQUEST saying what to do.
 */
async function checkReplay(nc: NatsConnection, kv: KV, cluster: string, tag: ModelTag): Promise<void> {
  const refuse = (why: string) => new FreshetError('BAD_REQUEST', `no replay: ${why}`, { retryable: false });
  if (!tag.replayable) {
    throw refuse(
      `tag ${tag.name} was not taken at a clean cut (${tag.why ?? 'unknown'}); roll back with --discard, ` +
        'or tag while the feed is quiet',
    );
  }
  const workers = (await discoverActors(nc, { cluster })).filter((a) => a.role === 'worker');
  if (workers.length > 0) {
    throw refuse(
      `worker(s) ${workers.map((w) => w.id).join(', ')} running: drain them first ` +
        `(\`freshet drain ID --cluster ${cluster}\` for each), start them again after the rollback`,
    );
  }
  const left = await liveKeys(nc, kv, cluster, manifestKeys);
  if (left.length > 0) {
    throw refuse(
      `batch manifest(s) ${left.join(', ')} left by a worker that did not stop cleanly: start the workers ` +
        'so they recover those batches, then drain them again',
    );
  }
}

/**
 * Moves each durable consumer of the tag to deliver again from right after its ack floor then:
 * deleted and added with the same config and a start sequence (nothing consumes meanwhile: no
 * worker runs). Returns the consumers and where they start.
 */
async function rewindConsumers(
  nc: NatsConnection,
  tag: ModelTag,
): Promise<{ name: string; startSeq: number }[]> {
  const jsm = await nc.jetstreamManager();
  const out: { name: string; startSeq: number }[] = [];
  for (const c of tag.consumers) {
    const have = await jsm.consumers.info(tag.stream.name, c.name).catch(() => undefined);
    if (!have) continue;
    const startSeq = c.ackFloor + 1;
    await jsm.consumers.delete(tag.stream.name, c.name);
    await jsm.consumers.add(tag.stream.name, {
      ...have.config,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: startSeq,
    });
    out.push({ name: c.name, startSeq });
  }
  return out;
}

/**
 * Rolls every shard back to the tag's checkpoint (admin `restore` with the object's name): each
 * shard fetches and verifies it, then swaps its state and tells serving to resync. By default
 * (discard) everything learned after the tag is gone and the events it came from stay
 * acknowledged; with `replay` the workers' consumers are moved back to the tag's positions, so
 * the workers, started again, learn those events once more on top of the tag. Then the pin, if
 * any, is lifted so that serving follows the rolled-back shards (unless `keepPin`).
 */
export async function rollBackToTag(
  nc: NatsConnection,
  cluster: string,
  name: string,
  o: { timeoutMs: number; keepPin?: boolean; replay?: boolean },
): Promise<{ results: AdminResult[]; unpinned: unknown; rewound?: { name: string; startSeq: number }[] }> {
  const kv = await clusterKv(nc, cluster);
  const tag = await readTag(kv, name);
  if (!tag)
    throw new FreshetError('BAD_REQUEST', `no tag ${name} in cluster ${cluster}`, { retryable: false });
  if (o.replay) await checkReplay(nc, kv, cluster, tag);
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
  const ok = results.every((r) => r.ok);
  // consumers move only once every shard holds the tag: a half rollback replays nothing
  const rewound = ok && o.replay ? await rewindConsumers(nc, tag) : undefined;
  const unpinned = ok && !o.keepPin ? await unpinModel(kv) : undefined;
  return { results, unpinned, ...(rewound ? { rewound } : {}) };
}

/** `freshet model rollback NAME`. */
export function modelRollbackCommand(): Command {
  return new Command('rollback')
    .description(
      'Roll every shard back to a tag; serving follows. What was learned after it is discarded, or learned again (--replay)',
    )
    .argument('<name>', 'tag name')
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option(
      '--discard',
      'discard what was learned after the tag; consumers stay where they are (the default)',
    )
    .option(
      '--replay',
      "learn the events after the tag again: the workers' consumers go back to the tag's positions " +
        '(workers drained first, started after; the tag must be replayable)',
    )
    .option(
      '--keep-pin',
      'leave a model pin in place (serving keeps its weights until `freshet model unpin`)',
    )
    .option('--json', 'print the result as JSON')
    .option('--timeout-ms <ms>', 'per-shard timeout (fetch, verify, reload)', '120000')
    .action(async (name: string, f: Flags) => {
      await withAdmin(f, 'freshet-model-rollback', async (nc) => {
        if (f.discard && f.replay) {
          throw new FreshetError('BAD_REQUEST', '--discard and --replay exclude each other', {
            retryable: false,
          });
        }
        const r = await rollBackToTag(nc, f.cluster, name, {
          timeoutMs: Number(f.timeoutMs),
          keepPin: f.keepPin,
          replay: f.replay,
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
          for (const c of r.rewound ?? []) {
            process.stdout.write(`consumer ${c.name}: delivers again from stream sequence ${c.startSeq}\n`);
          }
          if (r.rewound)
            process.stdout.write('start the workers: they learn the events after the tag again\n');
          if (r.unpinned) process.stdout.write('model pin lifted: serving follows the rolled-back shards\n');
        }
        if (r.results.some((x) => !x.ok)) process.exitCode = 1;
      });
    });
}
