import { ServingNode, type ServingLog, type ServingNodeDeps } from './serving-node.js';
import type { ServingOptionsInput } from './serving-options.js';

/** Creates and starts a serving node (listening; it answers NOT_READY until caught up). */
export async function startServing(
  input: ServingOptionsInput,
  deps: ServingNodeDeps = {},
): Promise<ServingNode> {
  const node = new ServingNode(input, deps);
  await node.start();
  return node;
}

/** JSON log lines on stderr: stdout carries only the machine-readable `ready` line. */
const stderrLog: ServingLog = (level, msg, fields) =>
  process.stderr.write(
    JSON.stringify({ t: new Date().toISOString(), level, role: 'serving', msg, ...fields }) + '\n',
  );

/**
 * Runs a serving node as a process until `signal` aborts: prints one JSON line
 * `{"event":"ready",...}` on stdout once the replica has caught up, then stops cleanly.
 */
export async function runServingProcess(input: ServingOptionsInput, signal: AbortSignal): Promise<void> {
  const node = await startServing(input, { log: stderrLog });
  try {
    await node.whenReady(signal);
    process.stdout.write(
      JSON.stringify({
        event: 'ready',
        role: 'serving',
        id: node.options.id,
        cluster: node.options.cluster,
        http: node.httpUrl,
        pid: process.pid,
      }) + '\n',
    );
    if (!signal.aborted)
      await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
  } catch (e) {
    if (!signal.aborted) throw e;
  } finally {
    await node.stop();
  }
}
