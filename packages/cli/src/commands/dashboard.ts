import { Command } from 'commander';
import { startDashboard } from '../dashboard/server.js';
import { aborted, shutdownSignal } from '../signals.js';
import { connectAdmin } from './common.js';

interface DashboardFlags {
  nats?: string;
  cluster?: string;
  host: string;
  port: string;
  expose?: boolean;
  intervalMs: string;
  also?: string;
}

/** `freshet dashboard`: a live web page of one cluster (or all), served on loopback by default. */
export function dashboardCommand(): Command {
  return new Command('dashboard')
    .description('Serve a live dashboard: AUC/logloss, examples/s, freshness, staleness, shards')
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'only this cluster')
    .option('--host <host>', 'address to bind (loopback unless --expose)', '127.0.0.1')
    .option('--port <port>', 'port (0 = any free one)', '8090')
    .option('--expose', 'allow a non-loopback --host')
    .option('--interval-ms <ms>', 'how often to poll the cluster', '1000')
    .option(
      '--also <clusters>',
      'with --cluster: other models (clusters learning from its stream), comma-separated, in a Models table',
    )
    .action(async (flags: DashboardFlags) => {
      const nc = await connectAdmin(flags, 'freshet-dashboard');
      const signal = shutdownSignal();
      try {
        const d = await startDashboard(nc, {
          ...(flags.cluster ? { cluster: flags.cluster } : {}),
          host: flags.host,
          port: Number(flags.port),
          expose: !!flags.expose,
          intervalMs: Math.max(200, Number(flags.intervalMs) || 1000),
          also: (flags.also ?? '')
            .split(',')
            .map((c) => c.trim())
            .filter((c) => c !== ''),
          signal,
        });
        process.stdout.write(`dashboard: ${d.url}  (metrics: ${d.url}metrics; Ctrl-C to stop)\n`);
        await aborted(signal);
        await d.close();
      } finally {
        await nc.close().catch(() => undefined);
      }
    });
}
