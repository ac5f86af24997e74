import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseReadyLine, requestBytes } from '@freshet/nats';
import {
  decodePullReply,
  decodePushReply,
  encodePull,
  encodePush,
  parseModelSpec,
  subjects,
  type PushRequest,
} from '@freshet/protocol';
import { spawnChild, uniqueName, useNats, waitFor, type ChildHandle } from '@freshet/testkit';
import { inProcessCore } from './in-process-core.js';
import { aligned } from '../src/shard.js';

const nats = useNats();
const bin = join(dirname(fileURLToPath(import.meta.url)), '../dist/bin.js');
const dataDir = mkdtempSync(join(tmpdir(), 'freshet-durable-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

const DIM = 8;
const LANES = 8;
const KEYS_PER_LANE = 32;
// Row bias correction: each row's update then depends on its own lane's history only, so the
// in-process reference may apply lanes one after another (the table mode's step count, which
// depends on the interleaving, is checked across checkpoints in adam-reference.test.ts).
const model = {
  name: 'durable',
  tables: [
    {
      name: 'emb',
      dim: DIM,
      optimizer: { kind: 'adam', lr: 0.05, biasCorrection: 'row' },
      staleness: { policy: 'none' },
    },
  ],
};

/** Lane l owns keys (l·1000 + j, 7): lanes never share rows, so each row's history is one lane's order. */
function lanePush(lane: number, step: number): PushRequest {
  const keys = new Uint32Array(KEYS_PER_LANE * 2);
  const grads = new Float32Array(KEYS_PER_LANE * DIM);
  for (let j = 0; j < KEYS_PER_LANE; j++) {
    keys[2 * j] = lane * 1000 + ((j * 7 + step) % 40); // overlapping subsets across steps
    keys[2 * j + 1] = 7;
    for (let k = 0; k < DIM; k++) grads[j * DIM + k] = Math.sin(lane * 31 + step * 7 + j * 3 + k) * 0.1;
  }
  return {
    id: `lane${lane}-step${step}`,
    worker: `lane${lane}`,
    clock: step,
    base: 0,
    tables: [{ t: 0, dim: DIM, keys, grads, counts: new Uint32Array(KEYS_PER_LANE).fill(1) }],
  };
}

function startChild(cluster: string): ChildHandle {
  const options = {
    cluster,
    shard: 0,
    shards: 1,
    nats: { servers: nats.url },
    model,
    dataDir,
    checkpointIntervalMs: 250,
    maintenanceIntervalMs: 25,
  };
  return spawnChild(process.execPath, [bin, '--options-json', JSON.stringify(options)]);
}
const readyLine = (c: ChildHandle) =>
  parseReadyLine(c.output()) as
    { restore?: { checkpointSegment: number | null; replayedRecords: number } } | undefined;

describe('durability', () => {
  it('keeps every acknowledged push across SIGKILL mid-stream (checkpoint + log replay)', async () => {
    expect(existsSync(bin), 'build the shard package first (dist/bin.js)').toBe(true);
    const cluster = uniqueName('dur');
    const s = subjects(cluster);
    const first = startChild(cluster);
    await waitFor(() => readyLine(first), { message: () => `shard ready:\n${first.output()}` });

    const acked = new Array<number>(LANES).fill(0);
    const inFlight = new Array<number | undefined>(LANES).fill(undefined);
    let stop = false;
    const lanes = Array.from({ length: LANES }, async (_, lane) => {
      for (let step = 0; !stop; step++) {
        inFlight[lane] = step;
        try {
          const r = decodePushReply(
            aligned(
              await requestBytes(nats.nc, s.push(0), encodePush(lanePush(lane, step)), { timeoutMs: 1500 }),
            ),
          );
          expect(r.duplicate).toBe(false);
        } catch {
          return; // the shard died with this push in flight
        }
        inFlight[lane] = undefined;
        acked[lane] = step + 1;
      }
    });
    const total = () => acked.reduce((a, b) => a + b, 0);
    // Kill only after a checkpoint was written and more pushes were acknowledged after it,
    // so the restart needs both the checkpoint and the log.
    await waitFor(() => readdirSync(dataDir).some((f) => f.endsWith('.ckpt')), { message: 'a checkpoint' });
    const atCheckpoint = total();
    await waitFor(() => total() >= atCheckpoint + 40, { message: 'pushes after the checkpoint' });
    first.child.kill('SIGKILL');
    await first.exited;
    stop = true;
    await Promise.all(lanes);
    // ≥, not >: the first checkpoint can come before any push, and the kill right at the 40th
    expect(total()).toBeGreaterThanOrEqual(atCheckpoint + 40);

    const second = startChild(cluster);
    const ready = await waitFor(() => readyLine(second), {
      message: () => `restarted shard ready:\n${second.output()}`,
    });
    expect(ready.restore?.checkpointSegment).not.toBeNull();
    expect(ready.restore?.replayedRecords).toBeGreaterThan(0);

    // Retry each lane's unacknowledged push with its id: applied now, or a duplicate if it was
    // logged before the kill. Either way each lane's pushes are then applied exactly once, in order.
    const steps = acked.slice();
    for (let lane = 0; lane < LANES; lane++) {
      const step = inFlight[lane];
      if (step === undefined) continue;
      decodePushReply(
        aligned(
          await requestBytes(nats.nc, s.push(0), encodePush(lanePush(lane, step)), { timeoutMs: 5000 }),
        ),
      );
      steps[lane] = step + 1;
    }

    // The same pushes applied in process.
    const ref = inProcessCore(parseModelSpec(model));
    for (let lane = 0; lane < LANES; lane++)
      for (let st = 0; st < steps[lane]!; st++) ref.applyPush(lanePush(lane, st), Date.now());

    const keys = new Uint32Array(LANES * 40 * 2);
    for (let lane = 0; lane < LANES; lane++)
      for (let j = 0; j < 40; j++) {
        keys[2 * (lane * 40 + j)] = lane * 1000 + j;
        keys[2 * (lane * 40 + j) + 1] = 7;
      }
    const got = decodePullReply(
      aligned(await requestBytes(nats.nc, s.pull(0), encodePull({ tables: [{ t: 0, keys }] }))),
    );
    const want = ref.pull({ tables: [{ t: 0, keys }] });
    expect(got.version).toBe(want.version);
    expect(Array.from(got.tables[0]!.values)).toEqual(Array.from(want.tables[0]!.values));
    await second.stop();
  });
});
