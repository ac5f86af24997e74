import { readFile, writeFile } from 'node:fs/promises';
import { Command } from 'commander';
import { eventEncoding, nonNegativeInt, positiveNumber } from '../cli-args.js';
import { resolveDataRef } from '../data-ref.js';
import { withAdmin } from './common.js';

interface BuildFlags {
  data: string;
  spec?: string;
  samples: number;
  skip: number;
  encoding: 'json' | 'msgpack';
  out: string;
}
interface ClusterFlags {
  nats?: string;
  cluster: string;
  json?: boolean;
}

const natsHelp = 'NATS URL(s), comma separated (default FRESHET_NATS_URL or nats://127.0.0.1:4222)';

/**
 * `freshet dict`: preset dictionaries of compressed feedback events (packages/client/README.md, "Compressed events"). `build`
 * makes one from sample events, `put` stores one in the cluster (publishers do it themselves
 * before their first compressed event), `list` shows what the cluster holds.
 */
export function dictCommand(): Command {
  const dict = new Command('dict').description('dictionaries of compressed feedback events');
  dict
    .command('build')
    .description(
      'build a dictionary (≤ 32 KiB) from sample events of a dataset, encoded as replay sends them',
    )
    .requiredOption(
      '--data <ref>',
      'criteo:PATH | movielens:PATH | obd:PATH | csv:PATH | synthetic[:k=v,...]',
    )
    .option('--spec <file>', 'column mapping for csv: data (JSON)')
    .option('--samples <n>', 'sample events', positiveNumber, 2000)
    .option(
      '--skip <n>',
      'events to pass over first (e.g. those a measured run will send)',
      nonNegativeInt,
      0,
    )
    .option('--encoding <enc>', 'json | msgpack: as the publisher will encode them', eventEncoding, 'json')
    .requiredOption('--out <file>', 'where to write the dictionary')
    .action(async (f: BuildFlags) => {
      const [{ datasetDictionary }, { eventDictionaryId }] = await Promise.all([
        import('@freshet/client'),
        import('@freshet/protocol'),
      ]);
      const bytes = await datasetDictionary({
        data: resolveDataRef(f.data, process.env),
        ...(f.spec !== undefined ? { spec: f.spec } : {}),
        samples: f.samples,
        skip: f.skip,
        encoding: f.encoding,
      });
      await writeFile(f.out, bytes);
      process.stdout.write(`${f.out}: dictionary ${eventDictionaryId(bytes)}, ${bytes.length} bytes\n`);
    });
  dict
    .command('put')
    .description("store a dictionary in the cluster's dictionary bucket (idempotent)")
    .argument('<file>', 'the dictionary (from `freshet dict build`, or any bytes ≤ 32 KiB)')
    .option('--nats <url>', natsHelp)
    .option('--cluster <name>', 'cluster name', 'local')
    .action(async (file: string, f: ClusterFlags) => {
      const { putEventDictionary } = await import('@freshet/nats');
      const bytes = new Uint8Array(await readFile(file));
      const id = await withAdmin(f, 'freshet-dict', (nc) => putEventDictionary(nc, f.cluster, bytes));
      process.stdout.write(`stored dictionary ${id} (${bytes.length} bytes) in cluster ${f.cluster}\n`);
    });
  dict
    .command('list')
    .description('the dictionaries the cluster holds')
    .option('--nats <url>', natsHelp)
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--json', 'one JSON line')
    .action(async (f: ClusterFlags) => {
      const { listEventDictionaries } = await import('@freshet/nats');
      const all = await withAdmin(f, 'freshet-dict', (nc) => listEventDictionaries(nc, f.cluster));
      if (f.json) process.stdout.write(JSON.stringify(all) + '\n');
      else if (all.length === 0) process.stdout.write(`no dictionaries in cluster ${f.cluster}\n`);
      else
        for (const d of all) process.stdout.write(`${d.id}  ${d.bytes} bytes  ${d.created.toISOString()}\n`);
    });
  return dict;
}
