import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError } from 'commander';
import type { NatsConnection } from 'nats';
import { readModelSpec } from '@freshet/nats';
import { FreshetError, modelSpecSchema, type ModelSpec } from '@freshet/protocol';
import { discoverActors } from '../discovery.js';
import { decodeWarmStart } from '../warm-start-file.js';
import {
  agreedShardCount,
  importDigest,
  importWarmStart,
  natsShardLink,
  type ImportReport,
} from '../warm-start-import.js';
import { withAdmin } from './common.js';

/**
 * `freshet model import FILE`: a batch-trained model's weights (docs/warm-start.md) become the
 * running cluster's starting point. The model spec comes from `--model` (a model spec or model
 * config, JSON) or from the cluster's KV (`freshet init`).
 */

export interface ModelImportFlags {
  nats?: string;
  cluster: string;
  model?: string;
  shards?: string;
  id?: string;
  chunkRows: string;
  allowMissing?: boolean;
  timeoutMs: string;
  json?: boolean;
}

/** The spec of `--model FILE`: a model spec ({name, tables}) as is, else a model config compiled. */
export async function modelSpecFromFile(path: string): Promise<ModelSpec> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new FreshetError('CONFIG', `--model ${path}: ${(e as Error).message}`);
  }
  const asSpec = modelSpecSchema.safeParse(raw);
  if (asSpec.success) return asSpec.data;
  // a config needs the model package (tfjs): loaded only on this path
  const { compileModelConfig } = await import('@freshet/model');
  return compileModelConfig(raw).spec;
}

async function clusterSpec(nc: NatsConnection, f: ModelImportFlags): Promise<ModelSpec> {
  if (f.model) return modelSpecFromFile(f.model);
  const stored = await readModelSpec(nc, f.cluster);
  if (stored.state === 'missing')
    throw new FreshetError(
      'CONFIG',
      `${stored.reason}: pass --model FILE (the model the shards run) or run \`freshet init\``,
    );
  return stored.spec;
}

/** Runs the import as the command does (tests call it with a connection of their own). */
export async function runModelImport(
  nc: NatsConnection,
  path: string,
  f: ModelImportFlags,
): Promise<ImportReport> {
  const bytes = new Uint8Array(await readFile(path));
  const file = decodeWarmStart(bytes);
  const spec = await clusterSpec(nc, f);
  const shards =
    f.shards !== undefined
      ? Number(f.shards)
      : agreedShardCount(
          (await discoverActors(nc, { cluster: f.cluster, roles: ['shard'] })).map((a) => a.status),
          f.cluster,
        );
  const link = natsShardLink(nc, f.cluster, { timeoutMs: Number(f.timeoutMs) });
  return importWarmStart(link, spec, file, importDigest(bytes), {
    shards,
    id: f.id,
    chunkRows: Number(f.chunkRows),
    allowMissing: f.allowMissing,
  });
}

function positive(v: string): string {
  if (!/^[1-9]\d*$/.test(v)) throw new InvalidArgumentError('expected a positive integer');
  return v;
}

/**
 * `freshet model import FILE`: the `import` subcommand of the `model` command group
 * (commands/model.ts adds it).
 */
export function modelImportCommand(): Command {
  return new Command('import')
    .description('Import a batch-trained model (a safetensors warm-start file) as the starting weights')
    .argument('<file>', 'the warm-start file (bench/peers/torch_export.py writes one)')
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--model <file>', "the shards' model spec or model config (JSON; default: the cluster KV's)")
    .option('--shards <n>', 'shard count (default: what the running shards report)', positive)
    .option('--id <id>', "the import's push-id prefix (default: from the file's sha256; same file, same id)")
    .option('--chunk-rows <n>', 'rows per pull and push', positive, '4096')
    .option('--allow-missing', 'import a file that lacks some of the model tables (they stay as they are)')
    .option('--timeout-ms <ms>', 'per-request timeout', positive, '30000')
    .option('--json', 'print the report as one JSON line')
    .action(async (path: string, f: ModelImportFlags) => {
      await withAdmin(f, 'freshet-model-import', async (nc) => {
        const r = await runModelImport(nc, path, f);
        if (f.json) process.stdout.write(JSON.stringify(r) + '\n');
        else {
          const rows = Object.entries(r.rows)
            .map(([t, n]) => `${t} ${n}`)
            .join(', ');
          process.stdout.write(
            `imported ${path} into ${f.cluster} (${r.model}, ${r.shards} shards) as ${r.id}: ${rows}; ` +
              `${r.pushes} pushes (${r.duplicates} already applied), ${r.rounds} rounds, ` +
              `${r.differing === 0 ? 'every row reads back bit for bit' : `${r.differing} rows still differ by rounding`}\n`,
          );
          if (r.missing.length > 0) process.stdout.write(`left as they were: ${r.missing.join(', ')}\n`);
          if (r.moved > 0)
            process.stdout.write(
              `${r.moved} rows were trained while importing: kept as file value + training\n`,
            );
        }
        if (r.differing > 0) process.exitCode = 1;
      });
    });
}
