import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { discoverActors, servingView } from '@freshet/cli';
import { createModel, type ModelConfigInput } from '@freshet/model';
import { requestBytes } from '@freshet/nats';
import {
  decodeDelta,
  decodeHostDelta,
  decodePushReply,
  encodePush,
  shardOfDense,
  shardOfKey,
  subjects,
} from '@freshet/protocol';
import { compileServingOptions, SlicedRows, startServing, type ServingNode } from '@freshet/serving';
import { startShard } from '@freshet/shard';
import { placeShardsInKv, uniqueName, useNats, waitFor } from '@freshet/testkit';
import { shardsAnswering, startShardHosts } from './host-fixtures.js';
import { postScore, startReadyNode, userItemDevice, type ScoreAnswer } from './score-kit.js';

const SHARDS = 4;
const model: ModelConfigInput = {
  name: 'sliced',
  kind: 'wide-deep',
  embeddingDim: 4,
  hidden: [8],
  features: userItemDevice,
};
const compiled = createModel(model);
const spec = compiled.spec;
const request = {
  user: 'u-7',
  context: { device: 'ios' },
  candidates: Array.from({ length: 24 }, (_, i) => ({ item: `item-${i}` })),
};

const score = (node: ServingNode): Promise<ScoreAnswer> => postScore(node, request);

/**
 * Sliced serving over real shards and a real nats-server: two nodes each holding half of the
 * shards score exactly what a node holding the whole model scores, asking each other for the
 * rows they lack; each hears only its own shards' deltas; a slice with nobody holding it fails
 * requests with a retryable 503 and the node keeps serving once a holder is back.
 */
describe('sliced serving', () => {
  const nats = useNats();
  const stops: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  });

  it('refuses slices that cannot be held', () => {
    const base = { cluster: 'c', shards: 4, model };
    expect(() => compileServingOptions({ ...base, slice: { index: 2, count: 2 } })).toThrow(/slice.index/);
    expect(() => compileServingOptions({ ...base, slice: { index: 0, count: 8 } })).toThrow(/slice.count/);
    expect(() =>
      compileServingOptions({
        ...base,
        slice: { index: 0, count: 2 },
        variants: [{ cluster: 'other', model, mode: 'shadow' }],
      }),
    ).toThrow(/variants/);
    expect(compileServingOptions({ ...base, slice: { index: 1, count: 2 } }).slice).toMatchObject({
      index: 1,
      count: 2,
      timeoutMs: 1000,
    });
  });

  const shardOptions = { model: spec, deltaIntervalMs: 5, fsync: false, checkpointIntervalMs: 0 };

  it('scores what the whole model scores, holding half of it (a process per shard)', async () => {
    const cluster = uniqueName('sliced').replace(/[^A-Za-z0-9_-]/g, '');
    const dir = await mkdtemp(join(tmpdir(), 'freshet-sliced-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    const running = [];
    for (let shard = 0; shard < SHARDS; shard++) {
      const sh = await startShard({
        ...shardOptions,
        cluster,
        shard,
        shards: SHARDS,
        nats: { servers: nats.url },
        dataDir: join(dir, `shard-${shard}`),
      });
      running.push(sh);
      stops.push(() => sh.stop());
    }
    const { a } = await slicedAgainstWhole(cluster, SHARDS);

    // A second holder of slice 1 that cannot catch up (shard 3 is gone) stays out of its slice's
    // queue group: every request still reaches the caught-up holder.
    await running[3]!.stop();
    const late = await startServing({
      cluster,
      shards: SHARDS,
      nats: { servers: nats.url },
      model,
      slice: { index: 1, count: 2 },
      replica: { snapshotTimeoutMs: 200 },
    });
    stops.push(() => late.stop());
    await new Promise((r) => setTimeout(r, 300));
    expect(late.ready).toBe(false);
    const failedBefore = a.status().slice!.failed;
    const answers = await Promise.all(Array.from({ length: 24 }, () => score(a)));
    expect(answers.map((x) => x.status)).toEqual(answers.map(() => 200));
    expect(a.status().slice!.failed).toBe(failedBefore);
    expect(late.status().slice!.answering).toBe(0);
  });

  it('scores what the whole model scores on shard hosts that split their deltas per slice', async () => {
    const cluster = uniqueName('slicedh').replace(/[^A-Za-z0-9_-]/g, '');
    const dir = await mkdtemp(join(tmpdir(), 'freshet-slicedh-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    // Eight shards over two hosts; host a runs 3, 5 and 7 of slice 1: one message for the three
    // (host b's lone shard of slice 1 goes on its own subject).
    await placeShardsInKv(nats.nc, cluster, ['a', 'b', 'a', 'a', 'b', 'a', 'b', 'a']);
    // slice 1's host deltas: subject and the shards of their parts
    const perSlice: [string, number[]][] = [];
    const sub = nats.nc.subscribe(subjects(cluster).hostDeltaSliceAll(2, 1), {
      callback: (_e, m) =>
        perSlice.push([m.subject, decodeHostDelta(m.data).map((p) => decodeDelta(p.frame).shard)]),
    });
    stops.push(() => Promise.resolve(sub.unsubscribe()));
    // a tick long enough for the pushes below to land in one
    const hosts = await startShardHosts({
      cluster,
      url: nats.url,
      dir,
      threads: { a: 0, b: 0 },
      shard: { ...shardOptions, deltaIntervalMs: 100, hostDeltas: true, servingSlices: 2 },
    });
    for (const h of hosts) stops.push(() => h.stop());
    await waitFor(async () => (await shardsAnswering(nats.nc, cluster, 8)) === 8, {
      timeoutMs: 15_000,
      message: 'the hosts to run all eight shards',
    });
    const { pushAll } = await slicedAgainstWhole(cluster, 8);
    // host a sent slice 1's parts in a message of their own: the pushes, sent together, reach the
    // shards one by one, and under load a tick can fall between them; push together again until
    // a tick carried two of a's slice-1 shards
    const prefix = subjects(cluster).prefix;
    const together = () =>
      perSlice.some(([subject, parts]) => subject === `${prefix}.hdelta.a.2.1` && new Set(parts).size > 1);
    for (let i = 0; i < 10 && !together(); i++) {
      await pushAll();
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(together()).toBe(true);
    // every slice-1 message holds its host's slice-1 shards only (host b's lone shard 1 goes on its
    // own subject, or as a host delta of its own when a tick caught two of its frames)
    const sliceOne = new Map([
      [`${prefix}.hdelta.a.2.1`, [3, 5, 7]],
      [`${prefix}.hdelta.b.2.1`, [1]],
    ]);
    for (const [subject, parts] of perSlice)
      expect(parts.every((p) => (sliceOne.get(subject) ?? []).includes(p))).toBe(true);
  });

  async function slicedAgainstWhole(
    cluster: string,
    shards: number,
  ): Promise<{ a: ServingNode; b: ServingNode; pushAll: () => Promise<unknown> }> {
    const s = subjects(cluster);
    const serve = async (slice?: { index: number; count: number }) => {
      const node = await startReadyNode({ cluster, shards, url: nats.url, model }, slice);
      stops.push(() => node.stop());
      return node;
    };
    const whole = await serve();
    const a = await serve({ index: 0, count: 2 });
    let b = await serve({ index: 1, count: 2 });

    // Move every row the request reads, on every shard, and the dense tensors: the scores then
    // differ from the defaults, so a row read from the wrong place would show.
    const batch = compiled.encode(
      request.candidates.map((c) => ({
        features: { user: request.user, device: request.context.device, item: c.item },
        label: 0,
      })),
    );
    const pushes = new Map<number, { t: number; dim: number; keys: number[]; grads: number[] }[]>();
    const add = (shard: number, t: number, dim: number, lo: number, hi: number, g: number) => {
      const list = pushes.get(shard) ?? [];
      pushes.set(shard, list);
      let p = list.find((x) => x.t === t);
      if (!p) list.push((p = { t, dim, keys: [], grads: [] }));
      p.keys.push(lo, hi);
      for (let j = 0; j < dim; j++) p.grads.push(g * (j % 2 === 0 ? 1 : -1));
    };
    for (const sp of batch.sparse) {
      const dim = spec.tables[sp.table]!.dim;
      for (let i = 0; i < sp.keys.length >>> 1; i++) {
        const lo = sp.keys[2 * i]!;
        const hi = sp.keys[2 * i + 1]!;
        add(shardOfKey(sp.table, lo, hi, shards), sp.table, dim, lo, hi, ((i % 7) - 3) * 0.4);
      }
    }
    for (const t of batch.denseTables) {
      const table = spec.tables[t]!;
      add(shardOfDense(table, shards), t, table.dim, 0, 0, 0.3);
    }
    expect(pushes.size).toBe(shards);
    const before = await score(whole);
    // all at once: a host's shards then publish in the same tick (one message per slice)
    const pushAll = () =>
      Promise.all(
        [...pushes].map(async ([shard, tables]) =>
          decodePushReply(
            await requestBytes(
              nats.nc,
              s.push(shard),
              encodePush({
                id: uniqueName('push'),
                worker: 'test',
                clock: 0,
                base: 0,
                eventTs: Date.now(),
                tables: tables.map((p) => ({
                  t: p.t,
                  dim: p.dim,
                  keys: Uint32Array.from(p.keys),
                  grads: Float32Array.from(p.grads),
                  counts: new Uint32Array(p.keys.length >>> 1).fill(1),
                })),
              }),
            ),
          ),
        ),
      );
    const replies = await pushAll();
    for (const r of replies) expect(r.applied).toBeGreaterThan(0);
    // every node has applied every shard's update: the same versions, answered by each
    const [w, x, y] = await waitFor(
      async () => {
        const got = await Promise.all([whole, a, b].map(score));
        const v = got.map((g) => g.body.version);
        return got.every((g) => g.status === 200) &&
          v[0] === v[1] &&
          v[1] === v[2] &&
          got[0]!.body.versions!.every((sv) => sv > 0)
          ? got
          : undefined;
      },
      { timeoutMs: 15_000, message: 'every node to serve every shard update' },
    );
    expect(w!.body.scores).not.toEqual(before.body.scores);
    for (const g of [x!, y!]) {
      expect(g.body.versions).toEqual(w!.body.versions);
      g.body.scores!.forEach((sc, i) => expect(sc).toBeCloseTo(w!.body.scores![i]!, 5));
    }

    // each sliced node holds its own shards' rows and asked the other slice for the rest
    const sa = a.status();
    const sw = whole.status();
    for (let shard = 0; shard < shards; shard++) expect(a.replica.holds(shard)).toBe(shard % 2 === 0);
    expect(sa.replica.rows).toBeLessThan(sw.replica.rows);
    expect(sa.replica.rows + b.status().replica.rows).toBeGreaterThanOrEqual(sw.replica.rows);
    expect(sa.slice).toMatchObject({ index: 0, count: 2 });
    // what `freshet status` shows of each node, through the service API
    const seen = await discoverActors(nats.nc, { cluster, roles: ['serving'], maxWaitMs: 300 });
    expect(seen.map((x) => [x.id, servingView(x).slice]).sort()).toEqual(
      [
        [whole.id, null],
        [a.id, '0/2'],
        [b.id, '1/2'],
      ].sort(),
    );
    expect(sa.slice!.requests).toBeGreaterThanOrEqual(1);
    const metrics = await (await fetch(`${a.httpUrl}/metrics`)).text();
    const sent = /freshet_serving_slice_requests_total\{[^}]*outcome="sent"\} (\d+)/.exec(metrics);
    expect(Number(sent?.[1])).toBe(a.status().slice!.requests);
    // only its own shards' deltas (and a dense tensor's owner's) reach it: none to ignore
    expect(sa.replica.deltasApplied).toBeGreaterThan(0);
    expect(sa.replica.deltasIgnored).toBe(0);
    // the other slice's dense tensors: read again from their owners, not followed by delta
    expect(sa.replica.denseRefreshes).toBeGreaterThan(0);
    expect(sa.replica.deltaBytes).toBeGreaterThan(0);
    expect(sa.replica.deltaBytes).toBeLessThan(sw.replica.deltaBytes);
    const denseOwners = new Set(batch.denseTables.map((t) => shardOfDense(spec.tables[t]!, shards)));
    sa.replica.seqs.forEach((seq, shard) => {
      if (shard % 2 === 1 && !denseOwners.has(shard)) expect(seq).toBe(0);
      else expect(seq).toBeGreaterThan(0);
    });

    // nobody holds slice 1: a retryable 503, and the node keeps running
    await b.stop();
    const down = await score(a);
    expect(down.status).toBe(503);
    expect(down.body.error).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
    expect(a.status().state).toBe('running');
    expect(a.status().slice!.failed).toBeGreaterThanOrEqual(1);

    // a new holder of slice 1 loads it from the shards and the scores are whole again
    b = await serve({ index: 1, count: 2 });
    const back = await score(a);
    expect(back.status).toBe(200);
    back.body.scores!.forEach((sc, i) => expect(sc).toBeCloseTo(w!.body.scores![i]!, 5));

    // the batches gathered in one turn share one rows request per other slice
    const rows = new SlicedRows(nats.nc, a.replica, { cluster, timeoutMs: 2000 });
    const one = await rows.gather(batch);
    expect(rows.sent).toEqual({ requests: 1, batches: 1 });
    const many = await Promise.all(Array.from({ length: 12 }, () => rows.gather(batch)));
    expect(rows.sent).toEqual({ requests: 2, batches: 13 });
    // a bound on the keys per request: the same turn's batches then go in several
    const bounded = new SlicedRows(nats.nc, a.replica, { cluster, timeoutMs: 2000, maxKeysPerRequest: 1 });
    const split = await Promise.all(Array.from({ length: 3 }, () => bounded.gather(batch)));
    expect(bounded.sent).toEqual({ requests: 3, batches: 3 });
    for (const g of [...many, ...split])
      for (const sp of batch.sparse)
        expect(Array.from(g.params.rows(sp.table, sp.keys))).toEqual(
          Array.from(one.params.rows(sp.table, sp.keys)),
        );
    return { a, b, pushAll };
  }
});
