import { Command } from 'commander';
import { connectNats, natsOptionsFromEnv } from '@freshet/nats';
import { FreshetError, subjects } from '@freshet/protocol';
import { loadClusterConfig, natsConnectionOptions } from '../cluster-config.js';
import { initCluster, type InitReport } from '../cluster-init.js';

interface InitFlags {
  config: string;
  json?: boolean;
}

/**
 * `freshet init --config FILE`: the operator's one bootstrap step for a cluster on external NATS
 * (Kubernetes, a shared NATS): streams, KV bucket and model spec, created or updated to match the
 * config. Roles started before it wait for it. `freshet up` needs no init: it prepares its own
 * embedded servers.
 */
export function initCommand(): Command {
  return new Command('init')
    .description('Create or update the streams, KV bucket and model spec a cluster config needs (idempotent)')
    .requiredOption('--config <file>', 'cluster config YAML (nats.urls names the servers)')
    .option('--json', 'one JSON line of what was created, updated or unchanged')
    .action(async (flags: InitFlags) => {
      const cfg = await loadClusterConfig(flags.config);
      if (cfg.nats.embedded > 0) {
        throw new FreshetError(
          'CONFIG',
          `${cfg.source}: nats.embedded is ${cfg.nats.embedded}; \`freshet up\` starts and prepares ` +
            'embedded servers itself. init is for external NATS: set nats.embedded: 0 and nats.urls.',
        );
      }
      // the config names the servers and its auth; the environment adds what a config never
      // holds (an nkey seed file, the admin inbox prefix), as for the role processes
      const nc = await connectNats(
        { ...natsOptionsFromEnv(), ...natsConnectionOptions(cfg, cfg.nats.urls) },
        `freshet-init-${cfg.cluster}`,
        { inboxPrefix: subjects(cfg.cluster).inboxPrefix('admin') },
      ).catch((e: unknown) => {
        throw new FreshetError(
          'UNAVAILABLE',
          `cannot connect to NATS at ${cfg.nats.urls.join(',')}: ${(e as Error).message}`,
          { cause: e },
        );
      });
      try {
        const report = await initCluster(nc, cfg);
        process.stdout.write(flags.json ? JSON.stringify(report) + '\n' : describe(report));
      } finally {
        await nc.close().catch(() => undefined);
      }
    });
}

function describe(r: InitReport): string {
  const rows: Array<[string, string, string]> = [
    ['feedback stream', r.feedbackStream.name, r.feedbackStream.result],
    ['dead-letter stream', r.deadLetterStream.name, r.deadLetterStream.result],
    ['KV bucket', r.kvBucket.name, r.kvBucket.result],
    ['model spec', `${r.kvBucket.name}/${r.modelSpec.key}`, r.modelSpec.result],
    ...(r.placement
      ? [
          ['shard placement', `${r.kvBucket.name}/${r.placement.key}`, r.placement.result] as [
            string,
            string,
            string,
          ],
        ]
      : []),
  ];
  const lines = rows.map(([what, name, result]) => `  ${what.padEnd(18)} ${name.padEnd(28)} ${result}`);
  const head = r.changed
    ? `cluster ${r.cluster} initialised:`
    : `cluster ${r.cluster} already initialised, nothing to do:`;
  return [head, ...lines].join('\n') + '\n';
}
