import { basename, join, posix } from 'node:path';
import { Command } from 'commander';
import { generateRouteAuth, issueRouteCerts, type RouteTls } from '@freshet/nats';
import { FreshetError } from '@freshet/protocol';
import { clusterConfigToYaml, planActors } from '../cluster-config.js';
import { generateNatsAuth, natsRoles, writeAuthFiles } from '../nats-auth.js';
import { privateDir } from '../private-files.js';
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
    .description('Write a nats-server authorization config with one nkey user per role (seeds in files)')
    .requiredOption('--cluster <name>', 'cluster name the permissions are for')
    .requiredOption('--out <dir>', 'directory for auth.conf and the <role>.nk seed files (all mode 0600)')
    .option(
      '--routes <host:port,...>',
      'also write cluster.conf (route secret + routes to these peers) for the cluster block',
    )
    .option(
      '--route-tls',
      'with --routes: mutual TLS on routes too (a CA and one certificate for every route host, made with openssl)',
    )
    .option(
      '--route-tls-dir <dir>',
      'where nats-server reads route.pem, route.key and route-ca.pem (the manifests mount the secret here)',
      '/etc/nats/auth',
    )
    .action(
      async (flags: {
        cluster: string;
        out: string;
        routes?: string;
        routeTls?: boolean;
        routeTlsDir: string;
      }) => {
        const auth = generateNatsAuth({ cluster: flags.cluster });
        const routes = flags.routes ? parseRoutes(flags.routes) : undefined;
        if (flags.routeTls && !routes)
          throw new FreshetError('CONFIG', '--route-tls needs --routes (the hosts the certificate names)');
        let tls: RouteTls | undefined;
        if (flags.routeTls && routes) {
          await privateDir(flags.out);
          const made = issueRouteCerts(flags.out, { hosts: [...new Set(routes.map((r) => r.host))] });
          // the servers read them where the secret is mounted, not where they were made
          const at = (f: string) => posix.join(flags.routeTlsDir, basename(f));
          tls = {
            certFile: at(made.nodes[0]!.certFile),
            keyFile: at(made.nodes[0]!.keyFile),
            caFile: at(made.caFile),
          };
        }
        const files = await writeAuthFiles(
          flags.out,
          auth,
          routes ? { routeAuth: generateRouteAuth(), routes, ...(tls ? { tls } : {}) } : undefined,
        );
        process.stdout.write(
          `wrote ${files.map((f) => join(flags.out, f)).join(', ')} (mode 0600).\n` +
            `Include auth.conf from nats-server.conf` +
            (routes ? ' and cluster.conf inside its cluster { } block' : '') +
            `; roles connect with FRESHET_NATS_NKEY_FILE=<dir>/<role>.nk ` +
            `FRESHET_NATS_INBOX_PREFIX=<the role's prefix>.\n` +
            natsRoles
              .map((r) => `  ${r.padEnd(9)} nkey ${auth.users[r].nkey}  inbox ${auth.users[r].inboxPrefix}`)
              .join('\n') +
            '\n',
        );
        if (tls) {
          process.stdout.write(
            `route TLS: route.pem, route.key and route-ca.pem in ${flags.out} go into the NATS servers' secret ` +
              `(read from ${flags.routeTlsDir}); route-ca.key issues more certificates: keep it out of the secret.\n`,
          );
        }
      },
    );
  return cmd;
}

/** `host:port,host:port` → route peers; CONFIG error on anything else. */
function parseRoutes(text: string): Array<{ host: string; port: number }> {
  return text.split(',').map((r) => {
    const m = /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(r.trim());
    if (!m) throw new FreshetError('CONFIG', `--routes: "${r}" is not host:port`);
    return { host: m[1]!, port: Number(m[2]) };
  });
}
