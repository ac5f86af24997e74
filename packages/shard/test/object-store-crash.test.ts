import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
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
import { spawnChild, uniqueName, useNats, useTempDirs, waitFor, type ChildHandle } from '@freshet/testkit';
import { inProcessCore } from './in-process-core.js';
import { describeObject, describeSegmentObject, ObjectBucket } from '../src/object-store-checkpoints.js';
import { aligned, Shard } from '../src/shard.js';

// A shard process killed with SIGKILL on one host restarts on another (an empty data dir) from
// the Object Store alone: its last checkpoint plus the log segments it mirrored after it.

const nats = useNats();
const tempDir = useTempDirs();
const bin = join(dirname(fileURLToPath(import.meta.url)), '../dist/bin.js');

const DIM = 8;
const model = {
  name: 'ckcrash',
  tables: [{ name: 'emb', dim: DIM, optimizer: { kind: 'adam', lr: 0.05 }, staleness: { policy: 'none' } }],
};
const KEYS = 64;

function pushOf(i: number): PushRequest {
  const rows = 24;
  const keys = new Uint32Array(rows * 2);
  const grads = new Float32Array(rows * DIM);
  for (let j = 0; j < rows; j++) {
    keys[2 * j] = (i * 5 + j * 3) % KEYS;
    keys[2 * j + 1] = 9;
    for (let k = 0; k < DIM; k++) grads[j * DIM + k] = Math.cos(i * 3 + j + k * 0.5) * 0.3;
  }
  return {
    id: `c${i}`,
    worker: 'w',
    clock: i,
    base: i,
    tables: [{ t: 0, dim: DIM, keys, grads, counts: new Uint32Array(rows).fill(1) }],
  };
}

const allKeys = new Uint32Array(KEYS * 2).map((_, i) => (i % 2 === 0 ? i / 2 : 9));

describe('a crashed shard restored elsewhere from the Object Store', () => {
  it('replays the mirrored log segments after the last checkpoint: weights and optimizer state as acknowledged', async () => {
    expect(existsSync(bin), 'build the shard package first (dist/bin.js)').toBe(true);
    const cluster = uniqueName('ckcrash');
    const s = subjects(cluster);
    const dataDir = tempDir('ckcrash-a');
    const options = {
      cluster,
      shard: 0,
      shards: 1,
      nats: { servers: nats.url },
      model,
      dataDir,
      fsync: false,
      checkpointIntervalMs: 0,
      maintenanceIntervalMs: 25,
      checkpoint: { store: 'object-store' as const, keep: 2, walSegmentMs: 100 },
    };
    const start = () => spawnChild(process.execPath, [bin, '--options-json', JSON.stringify(options)]);
    const ready = (c: ChildHandle) =>
      waitFor(() => parseReadyLine(c.output()), { message: () => `shard ready:\n${c.output()}` });
    const push = async (i: number) => {
      const r = decodePushReply(
        aligned(await requestBytes(nats.nc, s.push(0), encodePush(pushOf(i)), { timeoutMs: 10_000 })),
      );
      expect(r.duplicate).toBe(false);
      return r.version;
    };
    const objects = async () => {
      const bucket = await ObjectBucket.open(nats.nc, s.objectStore);
      const records = bucket ? await bucket.list() : [];
      return {
        checkpoints: records.flatMap((r) => describeObject(r) ?? []),
        segments: records.flatMap((r) => describeSegmentObject(r) ?? []),
      };
    };

    // host one: 20 pushes, drained (its final checkpoint uploaded), then 40 more and SIGKILL
    const first = start();
    await ready(first);
    for (let i = 0; i < 20; i++) await push(i);
    first.child.kill('SIGTERM');
    await first.exited;
    const drained = await objects();
    expect(drained.checkpoints.map((c) => c.version)).toEqual([20]);

    const second = start();
    await ready(second);
    for (let i = 20; i < 60; i++) {
      expect(await push(i)).toBe(i + 1);
      // spread over several sealed segments
      if (i % 10 === 9) await new Promise((r) => setTimeout(r, 150));
    }
    // every acknowledged push is in a mirrored segment: the crash loses nothing here
    let seen = '';
    await waitFor(
      async () => {
        const { segments } = await objects();
        seen = JSON.stringify(segments.map((x) => [x.segment, x.version]));
        return segments.some((x) => x.version === 60);
      },
      { message: () => `segments up to version 60: ${seen}` },
    );
    second.child.kill('SIGKILL');
    await second.exited;
    const left = await objects();
    expect(left.checkpoints.map((c) => c.version)).toEqual([20]);
    expect(left.segments.length).toBeGreaterThanOrEqual(2);

    // host two: an empty data dir
    const shard = new Shard(
      { ...options, dataDir: tempDir('ckcrash-b') },
      { nc: nats.nc, log: () => undefined },
    );
    await shard.start();
    try {
      expect(shard.restore).toMatchObject({
        checkpointSource: 'object-store',
        checkpointSegment: left.checkpoints[0]!.segment,
        checkpointVersion: 20,
        version: 60,
      });
      expect(shard.restore!.replayedRecords).toBeGreaterThanOrEqual(40);

      const ref = inProcessCore(parseModelSpec(model));
      for (let i = 0; i < 60; i++) ref.applyPush(pushOf(i), Date.now());
      const words = (v: Float32Array) => Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length));
      const compare = async () => {
        const got = decodePullReply(
          aligned(await requestBytes(nats.nc, s.pull(0), encodePull({ tables: [{ t: 0, keys: allKeys }] }))),
        );
        const want = ref.pull({ tables: [{ t: 0, keys: allKeys }] });
        expect(got.version).toBe(want.version);
        expect(words(got.tables[0]!.values)).toEqual(words(want.tables[0]!.values));
      };
      await compare();
      // Adam's moments and step counts came back too: the next push moves both the same way
      await push(60);
      ref.applyPush(pushOf(60), Date.now());
      await compare();
    } finally {
      await shard.stop();
    }
  });
});
