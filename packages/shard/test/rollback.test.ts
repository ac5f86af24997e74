import { describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { requestBytes } from '@freshet/nats';
import { decodePushReply, encodePush, subjects, type PushRequest } from '@freshet/protocol';
import { uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import { captureCheckpoint } from '../src/checkpoint.js';
import {
  checkpointObjectName,
  listCheckpointObjects,
  ObjectBucket,
} from '../src/object-store-checkpoints.js';
import { aligned, OBJECT_STORE_PREFIX, Shard } from '../src/shard.js';
import type { ShardCore } from '../src/shard-core.js';

/**
 * A shard rolled back to an older checkpoint of the Object Store while it runs (`freshet model
 * rollback`, docs/model-versions.md), in process against a real nats-server: 1 shard, Adam rows
 * of dim 8, pushes of 500 rows. Counted: the rolled-back state is word for word the tagged
 * checkpoint's; the delta sequence goes forward; and the rollback is durable: a restart on the
 * same data dir and a fresh one restored from the Object Store both come back with it (plus what
 * was pushed after), while the tagged object is kept through later uploads with keep 1.
 */
const nats = useNats();
const tempDir = useTempDirs();

const DIM = 8;
const model = {
  name: 'rollback',
  tables: [{ name: 'emb', dim: DIM, optimizer: { kind: 'adam', lr: 0.01 }, staleness: { policy: 'none' } }],
};

function pushOf(i: number, rows = 500): PushRequest {
  const keys = new Uint32Array(rows * 2);
  const grads = new Float32Array(rows * DIM);
  for (let j = 0; j < rows; j++) {
    keys[2 * j] = (j * 7 + i * 131) % 2000;
    keys[2 * j + 1] = 1;
    for (let k = 0; k < DIM; k++) grads[j * DIM + k] = Math.sin(i * 13 + j * 0.7 + k) * 0.2;
  }
  return {
    id: `p${i}`,
    worker: 'w',
    clock: i,
    base: 0,
    tables: [{ t: 0, dim: DIM, keys, grads, counts: new Uint32Array(rows).fill(1) }],
  };
}

async function push(nc: NatsConnection, cluster: string, i: number) {
  const reply = await requestBytes(nc, subjects(cluster).push(0), encodePush(pushOf(i)), {
    timeoutMs: 10_000,
  });
  return decodePushReply(aligned(reply));
}

/**
 * Rows with their optimizer state and sketches, word for word. Each table's pending delta lists
 * (its last two sections) are left out: they depend on when the delta publisher last ran.
 */
async function stateWords(core: ShardCore) {
  const cap = await captureCheckpoint(core, 0, 0);
  const all = new Uint8Array(cap.bytes);
  let off = 0;
  for (const s of cap.sections) {
    all.set(s, off);
    off += s.byteLength;
  }
  const words: number[] = [];
  off = 0;
  for (const t of cap.header.tables) {
    const kept = t.words * 4 + t.sketchWords * 2 + ((4 - ((t.sketchWords * 2) & 3)) & 3);
    for (const w of new Uint32Array(all.buffer, off, kept / 4)) words.push(w);
    off += kept + (t.dirty + t.dead) * 4;
  }
  expect(off).toBe(cap.bytes);
  return { version: cap.header.version, words };
}

const shardOf = (cluster: string, dataDir: string) =>
  new Shard(
    {
      cluster,
      shard: 0,
      shards: 1,
      nats: { servers: nats.url },
      model,
      dataDir,
      fsync: false,
      checkpointIntervalMs: 0,
      checkpoint: { store: 'object-store', keep: 1, walSegmentMs: 0 },
    },
    { nc: nats.nc, log: () => undefined },
  );

async function checkpointUploaded(s: Shard): Promise<number> {
  await s.checkpoint();
  const seg = s.status().lastCheckpoint!.segment;
  await waitFor(() => s.uploader!.stats.segment === seg, { message: `upload of ${seg}` });
  return seg;
}

describe('rollback to an Object Store checkpoint', () => {
  it('loads the tagged state word for word, moves the delta seq on, and survives restarts', async () => {
    const cluster = uniqueName('rollback');
    const dir = tempDir('rollback-a');
    const a = shardOf(cluster, dir);
    await a.start();
    for (let i = 0; i < 3; i++) await push(nats.nc, cluster, i);
    const tagged = checkpointObjectName(0, await checkpointUploaded(a));
    const bucket = (await ObjectBucket.open(nats.nc, subjects(cluster).objectStore))!;
    expect(await bucket.retag(tagged, ['t1'])).toEqual(['t1']);
    const atTag = await stateWords(a.core);
    expect(atTag.version).toBe(3);

    for (let i = 3; i < 6; i++) await push(nats.nc, cluster, i);
    // two uploads with keep 1: without the tag, the tagged checkpoint would be deleted
    await checkpointUploaded(a);
    await checkpointUploaded(a);
    const later = await stateWords(a.core);
    expect(later.words).not.toEqual(atTag.words);
    const seqBefore = a.status().deltaSeq;

    const r = await a.reload(OBJECT_STORE_PREFIX + tagged);
    expect(r).toMatchObject({ versionBefore: 6, version: 3, checkpointSource: 'object-store' });
    expect(await stateWords(a.core)).toEqual(atTag);
    // one number skipped, the next published at once (serving sees a gap and resyncs)
    expect(a.status().deltaSeq).toBe(seqBefore + 2);
    expect(a.state).toBe('running');

    // training goes on from the tag; then the rolled-back lineage must come back from anywhere
    expect((await push(nats.nc, cluster, 10)).version).toBe(4);
    await a.stop();
    expect(a.handedOff).toBe(true);
    const end = await stateWords(a.core);
    expect(end.version).toBe(4);
    const names = (await listCheckpointObjects(bucket)).map((c) => ({ name: c.name, tags: c.tags }));
    expect(names).toContainEqual({ name: tagged, tags: ['t1'] });
    expect(names).toHaveLength(2);

    const b = shardOf(cluster, dir);
    await b.start();
    expect(await stateWords(b.core)).toEqual(end);
    await b.stop();
    const c = shardOf(cluster, tempDir('rollback-fresh'));
    await c.start();
    expect(c.restore?.checkpointSource).toBe('object-store');
    expect(await stateWords(c.core)).toEqual(end);
    await c.stop();
  }, 60_000);

  it('refuses an object that is not one of its checkpoints (CONFIG), and keeps serving', async () => {
    const cluster = uniqueName('rollback-bad');
    const a = shardOf(cluster, tempDir('rollback-bad'));
    await a.start();
    await push(nats.nc, cluster, 0);
    await expect(a.reload(`${OBJECT_STORE_PREFIX}shard-0/checkpoint-0000000099.ckpt`)).rejects.toMatchObject({
      code: 'CONFIG',
    });
    expect(a.state).toBe('running');
    expect((await push(nats.nc, cluster, 1)).version).toBe(2);
    await a.stop();
  }, 30_000);
});
