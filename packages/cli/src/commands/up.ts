import { createServer } from 'node:net';
import { Command } from 'commander';
import { servingView } from '../actor-view.js';
import { nonNegativeInt } from '../cli-args.js';
import { defaultClusterConfig, loadClusterConfig, type ClusterConfig } from '../cluster-config.js';
import { startLocalCluster } from '../local-cluster.js';
import { createLogger } from '../logger.js';
import { createClusterMetrics, serveMetrics, type MetricsServer } from '../metrics.js';
import { aborted, shutdownSignal } from '../signals.js';

interface UpFlags {
  config?: string;
  natsPort: number;
  metricsPort?: string;
  readyTimeoutMs: string;
  quiet?: boolean;
}

/** Loads `--config`, or the default local cluster when none is given. */
export async function configFromFlags(file: string | undefined): Promise<ClusterConfig> {
  return file ? loadClusterConfig(file) : defaultClusterConfig();
}

/** NATS's default client port: where `freshet status` and `dashboard` look when given no --nats. */
const NATS_DEFAULT_PORT = 4222;

/** Whether nothing listens on host:port now (a listen that succeeds is closed at once). */
function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/**
 * `freshet up`: runs a cluster on this machine in the foreground. Ctrl-C (or SIGTERM) stops every
 * process it started, workers first; a second Ctrl-C exits at once (the reaper still cleans up).
 */
export function upCommand(): Command {
  return new Command('up')
    .description('Start a local cluster (nats-server + shards, workers, serving nodes) until Ctrl-C')
    .option(
      '--config <file>',
      'cluster config YAML (default: 1 nats-server, 2 shards, 1 worker, 1 serving node)',
    )
    .option(
      '--metrics-port <port>',
      'serve cluster Prometheus metrics on this port (overrides metrics.basePort)',
    )
    .option(
      '--nats-port <port>',
      `client port of the embedded nats-server when free (0: any free port)`,
      nonNegativeInt,
      NATS_DEFAULT_PORT,
    )
    .option('--ready-timeout-ms <ms>', 'how long to wait for every actor', '90000')
    .option('--quiet', 'do not forward the role processes’ logs')
    .action(async (flags: UpFlags) => {
      const log = createLogger('freshet-up');
      const cfg = await configFromFlags(flags.config);
      const signal = shutdownSignal((sig) => log.info({ signal: sig }, 'stopping (Ctrl-C again to force)'));
      // The default port lets `freshet status` and `dashboard` find this cluster with no flags; when
      // something else holds it, say so and take any free port rather than fail.
      let natsPort = cfg.nats.embedded > 0 ? flags.natsPort : 0;
      if (natsPort > 0 && !(await portFree(cfg.nats.host, natsPort))) {
        process.stderr.write(
          `freshet up: port ${natsPort} is in use (another nats-server?); NATS takes a free port instead, ` +
            'so pass the --nats URL printed below to status and dashboard\n',
        );
        natsPort = 0;
      }
      const lc = await startLocalCluster(cfg, {
        signal,
        log,
        ...(natsPort > 0 ? { natsPort } : {}),
        readyTimeoutMs: Number(flags.readyTimeoutMs) || 90_000,
        ...(flags.quiet
          ? {}
          : { onOutput: (_id: string, line: string) => process.stderr.write(line + '\n') }),
      });
      let metrics: MetricsServer | undefined;
      try {
        if (cfg.metrics.enabled) {
          const port = flags.metricsPort !== undefined ? Number(flags.metricsPort) : cfg.metrics.basePort;
          metrics = await serveMetrics(createClusterMetrics(lc.nc, { cluster: cfg.cluster }).registry, {
            host: cfg.metrics.host,
            port,
          });
        }
        const nats = lc.natsUrls.join(',');
        // Commands given no --nats connect to nats://127.0.0.1:4222 (or FRESHET_NATS_URL).
        const found = natsPort === NATS_DEFAULT_PORT && !process.env.FRESHET_NATS_URL;
        const natsFlag = found ? '' : ` --nats ${nats}`;
        const serving = (await lc.actors())
          .filter((a) => a.role === 'serving')
          .map((a) => ({ id: a.id, http: servingView(a).http }))
          .sort((a, b) => a.id.localeCompare(b.id));
        process.stdout.write(
          [
            `Freshet cluster "${cfg.cluster}" is up.`,
            `  NATS:     ${nats}`,
            `  actors:   ${lc.processes.map((p) => `${p.id} (pid ${p.pid})`).join(', ')}`,
            ...serving.map((s) => `  serving:  ${s.id} ${s.http ?? '(HTTP off)'}`),
            ...(metrics ? [`  metrics:  ${metrics.url}`] : []),
            `  status:   pnpm -s freshet status${natsFlag} --cluster ${cfg.cluster}`,
            `  dashboard: pnpm -s freshet dashboard${natsFlag} --cluster ${cfg.cluster}`,
            'Ctrl-C stops every process it started.',
            '',
          ].join('\n'),
        );
        await Promise.race([aborted(signal), lc.stopped]);
      } finally {
        await metrics?.close();
        await lc.stop();
      }
    });
}
