import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
import { clusterConfigToYaml, planActors } from '../cluster-config.js';
import { generateNatsAuth, natsRoles } from '../nats-auth.js';
import { configFromFlags } from './up.js';

/**
 * `freshet config show`: the cluster config with every default applied and the options each
 * actor would start with; `freshet config auth`: NATS users and per-role permissions.
 */
export function configCommand(): Command {
  const cmd = new Command('config').description('Inspect cluster configs and generate NATS auth config');
  cmd
    .command('show')
    .description('Print the resolved cluster config (defaults applied) and each actor’s options')
    .option('--config <file>', 'cluster config YAML (default: the built-in local cluster)')
    .option('--json', 'JSON instead of YAML')
    .action(async (flags: { config?: string; json?: boolean }) => {
      const cfg = await configFromFlags(flags.config);
      const urls = cfg.nats.urls.length
        ? cfg.nats.urls
        : Array.from({ length: cfg.nats.embedded }, (_, i) => `nats://${cfg.nats.host}:<embedded-${i}>`);
      if (flags.json) {
        const { source: _s, ...rest } = cfg;
        process.stdout.write(JSON.stringify({ ...rest, actors: planActors(cfg, urls) }, null, 2) + '\n');
      } else {
        process.stdout.write(`# ${cfg.source}\n${clusterConfigToYaml(cfg, urls)}`);
      }
    });
  cmd
    .command('auth')
    .description('Write a nats-server authorization config with one user per role (passwords in files)')
    .requiredOption('--cluster <name>', 'cluster name the permissions are for')
    .requiredOption('--out <dir>', 'directory for auth.conf and the <role>.pass files (mode 0600)')
    .action(async (flags: { cluster: string; out: string }) => {
      const auth = generateNatsAuth({ cluster: flags.cluster });
      await mkdir(flags.out, { recursive: true, mode: 0o700 });
      await writeFile(join(flags.out, 'auth.conf'), auth.config, { mode: 0o600 });
      for (const role of natsRoles) {
        await writeFile(join(flags.out, `${role}.pass`), auth.users[role].password + '\n', { mode: 0o600 });
      }
      process.stdout.write(
        `wrote ${join(flags.out, 'auth.conf')} (include it from nats-server.conf) and ${natsRoles
          .map((r) => `${r}.pass`)
          .join(', ')}.\n` +
          `Processes connect with FRESHET_NATS_USER=<role user> FRESHET_NATS_PASS_FILE=<dir>/<role>.pass.\n` +
          `Users: ${natsRoles.map((r) => `${r}=${auth.users[r].user}`).join(', ')}\n`,
      );
    });
  return cmd;
}
