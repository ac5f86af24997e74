import { Command } from 'commander';
import { defaultClusterConfig, loadClusterConfig, type ClusterConfig } from '../cluster-config.js';
import { startLocalCluster } from '../local-cluster.js';
import { createLogger } from '../logger.js';
import { createClusterMetrics, serveMetrics, type MetricsServer } from '../metrics.js';
import { aborted, shutdownSignal } from '../signals.js';

interface UpFlags {
  config?: string;
  metricsPort?: string;
  readyTimeoutMs: string;
  quiet?: boolean;
}

/** Loads `--config`, or the default local cluster when none is given. */
export async function configFromFlags(file: string | undefined): Promise<ClusterConfig> {
  return file ? loadClusterConfig(file) : defaultClusterConfig();
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
    .option('--ready-timeout-ms <ms>', 'how long to wait for every actor', '90000')
    .option('--quiet', 'do not forward the role processes’ logs')
    .action(async (flags: UpFlags) => {
      const log = createLogger('freshet-up');
      const cfg = await configFromFlags(flags.config);
      const signal = shutdownSignal((sig) => log.info({ signal: sig }, 'stopping (Ctrl-C again to force)'));
      const lc = await startLocalCluster(cfg, {
        signal,
        log,
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
        process.stdout.write(
          [
            `Freshet cluster "${cfg.cluster}" is up.`,
            `  NATS:     ${nats}`,
            `  actors:   ${lc.processes.map((p) => `${p.id} (pid ${p.pid})`).join(', ')}`,
            ...(metrics ? [`  metrics:  ${metrics.url}`] : []),
            `  status:   pnpm -s freshet status --nats ${nats} --cluster ${cfg.cluster}`,
            `  dashboard: pnpm -s freshet dashboard --nats ${nats} --cluster ${cfg.cluster}`,
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
