import { natsOptionsFromEnv, readRoleOptions, roleOptionsArgs } from '@freshet/nats';
import { FreshetError } from '@freshet/protocol';
import { Worker } from './worker.js';
import type { WorkerOptionsInput } from './worker-options.js';

/**
 * The worker process entry: `--options-json '<json>'` (or `--options-json @file.json`), NATS
 * settings from FRESHET_NATS_* when the options do not name servers. SIGINT/SIGTERM stop the
 * worker cleanly (hand back, drain, give up leases). Prints one JSON line `{"ready":...}` on
 * stdout once running; logs JSON lines on stderr. Resolves with the exit code.
 */
export async function runWorkerProcess(
  argv: readonly string[] = process.argv.slice(2),
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  let input: WorkerOptionsInput;
  try {
    input = readRoleOptions(roleOptionsArgs(argv), natsOptionsFromEnv(env)) as WorkerOptionsInput;
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  const log = (level: string, msg: string, fields?: Record<string, unknown>) =>
    process.stderr.write(JSON.stringify({ t: new Date().toISOString(), level, msg, ...fields }) + '\n');
  const ac = new AbortController();
  let worker: Worker;
  try {
    worker = new Worker(input, { signal: ac.signal, log });
    const onSignal = () => ac.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    await worker.start();
  } catch (e) {
    log('error', 'worker failed to start', {
      code: e instanceof FreshetError ? e.code : 'INTERNAL',
      error: (e as Error).message,
    });
    return 1;
  }
  process.stdout.write(JSON.stringify({ ready: { id: worker.id, partitions: worker.partitions } }) + '\n');
  await new Promise<void>((resolve) => ac.signal.addEventListener('abort', () => resolve(), { once: true }));
  await worker.stop();
  return 0;
}
