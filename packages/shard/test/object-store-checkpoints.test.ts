import { createHash } from 'node:crypto';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { headers, JsHeaders, type NatsConnection } from 'nats';
import { requestBytes } from '@freshet/nats';
import { decodePushReply, encodePush, subjects, type PushRequest } from '@freshet/protocol';
import { uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import { captureCheckpoint } from '../src/checkpoint.js';
import { RESTORE_MARKER, sha256Hex } from '../src/checkpoint-store.js';
import {
  checkpointObjectName,
  listCheckpointObjects,
  ObjectBucket,
} from '../src/object-store-checkpoints.js';
import { compileShardOptions } from '../src/shard-options.js';
import { aligned, Shard } from '../src/shard.js';
import type { ShardCore } from '../src/shard-core.js';

const nats = useNats();
const tempDir = useTempDirs();

const DIM = 16;
const KEYS = 20_000; // Adam, dim 16: 208 bytes a row, ~4 MB of rows
const model = {
  name: 'ckpt-os',
  tables: [{ name: 'emb', dim: DIM, optimizer: { kind: 'adam', lr: 0.01 }, staleness: { policy: 'none' } }],
};

function pushOf(i: number, rows = 5000): PushRequest {
  const keys = new Uint32Array(rows * 2);
  const grads = new Float32Array(rows * DIM);
  for (let j = 0; j < rows; j++) {
    keys[2 * j] = (j * 7 + i * 1811) % KEYS; // overlapping subsets: rows see several updates
    keys[2 * j + 1] = 3;
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

async function push(nc: NatsConnection, cluster: string, i: number, rows?: number) {
  const reply = await requestBytes(nc, subjects(cluster).push(0), encodePush(pushOf(i, rows)), {
    timeoutMs: 10_000,
  });
  return decodePushReply(aligned(reply));
}

interface Logged {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

function shardOf(cluster: string, dataDir: string, extra: Record<string, unknown> = {}) {
  const logs: Logged[] = [];
  const shard = new Shard(
    {
      cluster,
      shard: 0,
      shards: 1,
      nats: { servers: nats.url },
      model,
      dataDir,
      fsync: false,
      checkpointIntervalMs: 0,
      checkpoint: { store: 'object-store', keep: 2 },
      ...extra,
    },
    { nc: nats.nc, log: (level, msg, fields) => logs.push({ level, msg, fields }) },
  );
  return { shard, logs };
}

/** Every word of the state a checkpoint holds: rows with optimizer state, sketches, pending deltas. */
async function stateWords(core: ShardCore) {
  const cap = await captureCheckpoint(core, 0, 0);
  const words = new Uint8Array(cap.bytes);
  let off = 0;
  for (const s of cap.sections) {
    words.set(s, off);
    off += s.byteLength;
  }
  const { version, recent, tables } = cap.header;
  return { version, recent, tables, words: new Uint32Array(words.buffer) };
}

/** nats.js's own Object Store view: what the shard writes must read there too, and the other way round. */
const objectStore = (cluster: string) => nats.nc.jetstream().views.os(subjects(cluster).objectStore);
const listed = async (cluster: string) =>
  listCheckpointObjects((await ObjectBucket.open(nats.nc, subjects(cluster).objectStore))!);

describe('checkpoint options', () => {
  it('refuses an unknown store and the object store without a data dir (CONFIG)', () => {
    const base = { cluster: 'c', shard: 0, shards: 1 };
    expect(() => compileShardOptions({ ...base, checkpoint: { store: 's3' as 'dir' } })).toThrow(
      expect.objectContaining({ code: 'CONFIG' }) as Error,
    );
    expect(() => compileShardOptions({ ...base, checkpoint: { store: 'object-store' } })).toThrow(
      /checkpoint\.store.*needs a dataDir/,
    );
    expect(() => compileShardOptions({ ...base, dataDir: 'd', checkpoint: { keep: 0 } })).toThrow(
      expect.objectContaining({ code: 'CONFIG' }) as Error,
    );
    expect(compileShardOptions({ ...base, dataDir: 'd' }).checkpoint).toEqual({
      store: 'dir',
      keep: 3,
      replicas: 1,
      walSegmentMs: 10_000,
    });
  });
});

describe('checkpoints in the JetStream Object Store', () => {
  it('a drained shard restarts on an empty data dir from the bus alone, bit-identical; keeps the newest N', async () => {
    const cluster = uniqueName('ckos');
    const a = shardOf(cluster, tempDir('ckos-a'));
    await a.shard.start();
    expect(a.shard.restore?.checkpointSource).toBeNull();
    for (let i = 0; i < 4; i++) expect((await push(nats.nc, cluster, i)).version).toBe(i + 1);
    // three checkpoints while training, then the drain's final one: keep 2 leaves the newest two
    for (let c = 0; c < 3; c++) {
      await a.shard.checkpoint();
      // one upload each: one written while an upload runs is coalesced into the next
      const seg = a.shard.status().lastCheckpoint!.segment;
      await waitFor(() => a.shard.uploader!.stats.segment === seg, { message: `upload of ${seg}` });
      await push(nats.nc, cluster, 10 + c);
    }
    await a.shard.stop();
    const up = a.shard.uploader!.stats;
    expect(up.failures).toBe(0);
    const finalSegment = a.shard.status().lastCheckpoint!.segment;
    expect(up.segment).toBe(finalSegment);
    const objects = await listed(cluster);
    expect(objects.map((o) => o.name)).toEqual([
      checkpointObjectName(0, finalSegment),
      checkpointObjectName(0, finalSegment - 1),
    ]);
    expect(objects[0]).toMatchObject({ shard: 0, shards: 1, model: 'ckpt-os', version: 7 });
    expect(objects[0]!.problem).toBeUndefined();
    const before = await stateWords(a.shard.core);
    expect(before.words.byteLength).toBeGreaterThan(2 << 20);

    // a new host: empty data dir, same index
    const emptyDir = tempDir('ckos-b');
    const b = shardOf(cluster, emptyDir);
    const t0 = performance.now();
    await b.shard.start();
    const restoreMs = performance.now() - t0;
    try {
      expect(b.shard.restore).toMatchObject({
        checkpointSource: 'object-store',
        checkpointSegment: finalSegment,
        replayedRecords: 0,
        version: 7,
      });
      const after = await stateWords(b.shard.core);
      expect(after.version).toBe(before.version);
      expect(after.recent).toEqual(before.recent);
      expect(after.tables).toEqual(before.tables);
      expect(after.words.length).toBe(before.words.length);
      // every raw word (float bits of weights and Adam moments, row metadata, sketches)
      expect(Buffer.compare(Buffer.from(after.words.buffer), Buffer.from(before.words.buffer))).toBe(0);
      console.log(
        JSON.stringify({
          checkpointBytes: objects[0]!.bytes,
          uploadMs: up.lastMs,
          startWithRestoreMs: Math.round(restoreMs),
          fetchMs: b.shard.restore!.fetchMs,
          restoreMs: b.shard.restore!.ms,
        }),
      );

      // it goes on: its log starts after the fetched checkpoint, and its checkpoints are newer
      expect((await push(nats.nc, cluster, 20)).version).toBe(8);
      await b.shard.checkpoint();
      await waitFor(() => (b.shard.uploader!.stats.segment ?? 0) > finalSegment, { message: 'upload' });
    } finally {
      await b.shard.stop();
    }
    // and restarts from its own data dir as before
    const c = shardOf(cluster, emptyDir);
    await c.shard.start();
    try {
      expect(c.shard.restore).toMatchObject({ checkpointSource: 'dir', version: 8 });
      expect(readdirSync(emptyDir).filter((f) => f.endsWith('.ckpt'))).toHaveLength(1);
    } finally {
      await c.shard.stop();
    }
  });

  it('refuses a corrupt object (checksum, size, magic) with a clear warning and takes the next-newest', async () => {
    const cluster = uniqueName('ckbad');
    // keep 10: the restored shard's own uploads must not prune the corrupt objects away
    const keep10 = { checkpoint: { store: 'object-store', keep: 10 } };
    const a = shardOf(cluster, tempDir('ckbad-a'), keep10);
    await a.shard.start();
    await push(nats.nc, cluster, 1, 300);
    await push(nats.nc, cluster, 2, 300);
    await a.shard.stop();
    const good = await stateWords(a.shard.core);
    const os = await objectStore(cluster);
    const [obj] = await listed(cluster);
    const info = (await os.info(obj!.name))!;
    const bytes = (await os.getBlob(obj!.name))!;

    // newer objects that each fail one check
    const flipped = bytes.slice();
    flipped[flipped.length - 5]! ^= 0x10;
    const badMagic = bytes.slice();
    badMagic[0] = 0;
    const corrupt = [
      { seg: obj!.segment + 10, data: flipped, sha: obj!.sha256, why: /checksum mismatch/ },
      {
        seg: obj!.segment + 11,
        data: bytes.slice(0, bytes.length - 64),
        sha: obj!.sha256,
        why: /bytes, recorded/,
      },
      { seg: obj!.segment + 12, data: badMagic, sha: await sha256Hex(badMagic), why: /bad magic/ },
    ];
    for (const c of corrupt) {
      await os.putBlob(
        {
          name: checkpointObjectName(0, c.seg),
          metadata: { ...info.metadata, segment: String(c.seg), sha256: c.sha, bytes: String(bytes.length) },
        },
        c.data,
      );
    }

    const b = shardOf(cluster, tempDir('ckbad-b'), keep10);
    await b.shard.start();
    try {
      expect(b.shard.restore).toMatchObject({
        checkpointSource: 'object-store',
        checkpointSegment: obj!.segment,
      });
      const after = await stateWords(b.shard.core);
      expect(after.version).toBe(2);
      expect(Buffer.compare(Buffer.from(after.words.buffer), Buffer.from(good.words.buffer))).toBe(0);
      const refused = b.logs.filter((l) => l.msg.startsWith('checkpoint refused'));
      expect(refused.map((l) => l.fields?.code)).toEqual(['BAD_FRAME', 'BAD_FRAME', 'BAD_FRAME']);
      // newest first, each with its reason
      for (const [i, c] of [...corrupt].reverse().entries()) {
        expect(String(refused[i]!.fields?.error)).toMatch(c.why);
        expect(String(refused[i]!.fields?.error)).toContain(checkpointObjectName(0, c.seg));
      }
    } finally {
      await b.shard.stop();
    }

    // nothing usable at all: the shard does not start empty (that would drop the trained model)
    for (const o of await listed(cluster)) {
      if (!corrupt.some((c) => checkpointObjectName(0, c.seg) === o.name)) await os.delete(o.name);
    }
    const c = shardOf(cluster, tempDir('ckbad-c'), keep10);
    await expect(c.shard.start()).rejects.toMatchObject({
      code: 'BAD_FRAME',
      message: expect.stringMatching(/no usable checkpoint among 3/) as string,
    });
  });

  it('starts a restore from the store again when the last one was cut short (its marker left)', async () => {
    const cluster = uniqueName('ckcut');
    const a = shardOf(cluster, tempDir('ckcut-a'));
    await a.shard.start();
    await push(nats.nc, cluster, 1, 200);
    await a.shard.stop();
    // what a restore killed half way leaves: its marker and a partial state
    const dir = tempDir('ckcut-b');
    writeFileSync(join(dir, RESTORE_MARKER), '');
    writeFileSync(join(dir, 'checkpoint-0000000999.ckpt'), 'partial');
    writeFileSync(join(dir, 'wal-0000001000.log'), 'partial');
    const b = shardOf(cluster, dir);
    await b.shard.start();
    try {
      expect(b.shard.restore).toMatchObject({ checkpointSource: 'object-store', version: 1 });
      expect(readdirSync(dir).some((f) => f.includes('999') || f === RESTORE_MARKER)).toBe(false);
    } finally {
      await b.shard.stop();
    }
  });

  it('a failing upload logs a warning with a code, never holds pushes, and is retried at the next checkpoint', async () => {
    const cluster = uniqueName('ckfail');
    const bucket = subjects(cluster).objectStore;
    // a bucket too small for any checkpoint: every upload fails on the server
    await nats.nc.jetstream().views.os(bucket, { max_bytes: 4096 });
    const a = shardOf(cluster, tempDir('ckfail-a'));
    await a.shard.start();
    try {
      const up = a.shard.uploader!.stats;
      for (let i = 0; i < 3; i++) {
        await push(nats.nc, cluster, i);
        await a.shard.checkpoint(); // resolves with the local checkpoint, upload or not
      }
      await waitFor(() => up.failures >= 1, { message: 'a failed upload' });
      const warn = a.logs.find((l) => l.msg.startsWith('checkpoint upload failed'));
      expect(warn?.level).toBe('warn');
      expect(warn?.fields?.code).toEqual(expect.any(String));
      // pushes go on while uploads fail
      for (let i = 3; i < 6; i++) expect((await push(nats.nc, cluster, i)).version).toBe(i + 1);
      expect(a.shard.state).toBe('running');
      expect(await listed(cluster)).toEqual([]);

      // room again: the next checkpoint's upload gets there
      const jsm = await nats.nc.jetstreamManager();
      const si = await jsm.streams.info(`OBJ_${bucket}`);
      await jsm.streams.update(`OBJ_${bucket}`, { ...si.config, max_bytes: -1 });
      await a.shard.checkpoint();
      const segment = a.shard.status().lastCheckpoint!.segment;
      await waitFor(() => up.segment === segment, {
        message: () => `upload after the retry: ${up.lastError}`,
      });
      const objects = await listed(cluster);
      expect(objects.map((o) => [o.segment, o.version])).toEqual([[segment, 6]]);
    } finally {
      await a.shard.stop();
    }
  });

  it("reads an object whose chunks are interleaved with another upload's (shards uploading at once)", async () => {
    const name = uniqueName('ckmix').replace(/-/g, '_');
    const bucket = (await ObjectBucket.open(nats.nc, name, { replicas: 1 }))!;
    const js = nats.nc.jetstream();
    const chunk = (o: number, i: number) => new Uint8Array(1000).fill(o * 16 + i);
    // two objects' chunks published alternately: A0 B0 A1 B1 ...
    for (let i = 0; i < 5; i++) for (const o of [0, 1]) await js.publish(`$O.${name}.C.obj${o}`, chunk(o, i));
    for (const o of [0, 1]) {
      const all = Buffer.concat(Array.from({ length: 5 }, (_, i) => chunk(o, i)));
      const digest = createHash('sha256')
        .update(all)
        .digest('base64')
        .replace(/\+/g, '-')
        .replace(/\//g, '_');
      const rec = {
        name: `o${o}`,
        bucket: name,
        nuid: `obj${o}`,
        size: 5000,
        chunks: 5,
        digest: `SHA-256=${digest}`,
        mtime: new Date().toISOString(),
      };
      const h = headers();
      h.set(JsHeaders.RollupHdr, JsHeaders.RollupValueSubject);
      const subj = `$O.${name}.M.${Buffer.from(`o${o}`).toString('base64').replace(/\+/g, '-').replace(/\//g, '_')}`;
      await js.publish(subj, new TextEncoder().encode(JSON.stringify(rec)), { headers: h });
      const got = await bucket.read((await bucket.info(`o${o}`))!);
      expect(Buffer.compare(Buffer.from(got), all)).toBe(0);
      // and nats.js reads the same bytes (its digest check included)
      expect(
        Buffer.compare(Buffer.from((await js.views.os(name).then((os) => os.getBlob(`o${o}`)))!), all),
      ).toBe(0);
    }
    // a chunk gone is a corrupt object, not a short one
    await (await nats.nc.jetstreamManager()).streams.purge(`OBJ_${name}`, { filter: `$O.${name}.C.obj1` });
    await expect(bucket.read((await bucket.info('o1'))!)).rejects.toMatchObject({
      code: 'BAD_FRAME',
      message: expect.stringMatching(/chunk 1 of 5 is missing/) as string,
    });
  });
});
