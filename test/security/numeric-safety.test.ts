import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureStream } from '@freshet/client';
import { createModel, NUMERIC_INPUT_LIMIT, type ModelConfigInput } from '@freshet/model';
import { connectNats, frameEndpoint, requestBytes } from '@freshet/nats';
import {
  decodePull,
  decodePushReply,
  parseModelSpec,
  encodePullReply,
  encodePush,
  featureId,
  hasCode,
  subjects,
  type PushRequest,
} from '@freshet/protocol';
import { ShardCore, startShard, tickOf, type Shard } from '@freshet/shard';
import { startWorker, type Worker } from '@freshet/worker';
import { consumerBacklog, uniqueName, useNats, waitFor } from '@freshet/testkit';

// One bad number cannot poison the model, with real processes' code on a real nats-server:
// - edge values (3e38, 1e300, -1e308, 1e-45, 5e-324, -0, "NaN", "Infinity", "1e400") at weight
//   1000 go through a real worker and shard; every weight stays finite and keeps learning after;
// - a batch whose gradient comes back non-finite is dead-lettered (NON_FINITE_GRADIENT), never
//   retried and never pushed (a stand-in shard serves poisoned rows to force it);
// - a shard refuses a whole push whose gradients are non-finite or overflow float32 when squared
//   (NON_FINITE, GRAD_OVERFLOW): its version and every row of the push are unchanged;
// - a finite push that would overflow the optimizer state (FTRL's n scaled by the example count)
//   is rolled back and refused (NON_FINITE_STATE), never logged: a reload from the log replays
//   the accepted pushes only and ends where the shard was;
// - a worker whose batch a shard refuses that way dead-letters its events (NON_FINITE_STATE),
//   does not retry it, and the partition keeps moving.

const nats = useNats();
const stops: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
});

const model: ModelConfigInput = {
  name: 'numeric',
  kind: 'lr',
  features: {
    fields: [
      { kind: 'categorical', name: 'user' },
      // heavy-tailed, as shipped: bounded and counted, not rescaled
      { kind: 'numeric', name: 'price' },
      // the robust scaling a heavy-tailed feature should use
      { kind: 'numeric', name: 'amount', transform: 'log1p-standardise' },
    ],
  },
  optimizer: { kind: 'adam', lr: 0.05 },
};
const spec = createModel(model).spec;
const wide = spec.tables.findIndex((t) => t.kind === 'sparse');
const dense = spec.tables.findIndex((t) => t.kind === 'dense');
const edge = ['3e38', '1e300', '-1e308', '1e-45', '5e-324', '-0', '"NaN"', '"Infinity"', '"1e400"'];

/** A labeller's example as raw JSON text, so -0 and 1e300 reach the worker exactly as written. */
function exampleJson(
  id: string,
  user: string,
  price: string,
  amount: string,
  label: number,
  weight = 1,
): string {
  return `{"v":1,"kind":"example","id":"${id}","ts":${Date.now()},"user":"${user}","label":${label},"weight":${weight},"features":{"user":"${user}","price":${price},"amount":${amount}}}`;
}

async function cluster(partitions = 1) {
  const name = uniqueName('num');
  await ensureStream(nats.nc, { cluster: name, partitions, storage: 'memory' });
  return name;
}

async function worker(name: string, id: string): Promise<Worker> {
  const w = await startWorker({
    cluster: name,
    id,
    nats: { servers: nats.url },
    model,
    shards: 1,
    partitions: 1,
    batch: { size: 16, maxWaitMs: 20 },
    compute: { threads: 1 },
    retry: { attempts: 1000, baseMs: 10, maxMs: 100 },
  });
  stops.push(() => w.stop(2000));
  return w;
}

describe('numeric safety end to end', () => {
  it('edge values leave every weight finite, counted as clipped, and the weights keep learning', async () => {
    const name = await cluster();
    const s = subjects(name);
    const dir = await mkdtemp(join(tmpdir(), 'freshet-num-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    const shard: Shard = await startShard({
      cluster: name,
      shard: 0,
      shards: 1,
      nats: { servers: nats.url },
      model: spec,
      dataDir: dir,
    });
    stops.push(() => shard.stop());
    const w = await worker(name, 'num-a');
    const js = nats.nc.jetstream();
    const key = new Uint32Array(2);
    featureId('user', 'victim', key);
    const read = () => {
      const r = shard.core.pull({
        worker: '',
        clock: 0,
        tables: [
          { t: wide, keys: key.slice() },
          { t: dense, keys: new Uint32Array(2) },
        ],
      });
      return { user: [...r.tables[0]!.values], dense: [...r.tables[1]!.values] };
    };
    const acked = (n: number, what: string) =>
      waitFor(() => w.status().counters.acked >= n, {
        timeoutMs: 45_000,
        message: () =>
          `${what}: ${w.status().counters.acked}/${n} acked; ${JSON.stringify(w.status().deadLetters)}`,
      });

    // phase 1: every edge value, in price and in amount, at the largest example weight
    let n = 0;
    for (let rep = 0; rep < 4; rep++) {
      for (const v of edge) {
        await js.publish(s.labels(0), exampleJson(`o${n}`, 'victim', v, v, n % 2, 1000));
        await js.publish(s.labels(0), exampleJson(`p${n}`, 'victim', '5', v, n % 2, 1000));
        n += 2;
      }
    }
    await acked(n, 'edge values');
    const afterEdge = read();
    for (const x of [...afterEdge.user, ...afterEdge.dense]) expect(Number.isFinite(x)).toBe(true);
    const st = w.status();
    // 3e38, 1e300 and -1e308, four times each, in both fields (strings are missing values)
    expect(st.clippedValues.price).toBeGreaterThanOrEqual(12);
    expect(st.clippedValues.amount).toBeGreaterThanOrEqual(12);
    expect(st.deadLetters.NON_FINITE_GRADIENT).toBe(0);
    expect(st.counters.failedBatches).toBe(0);
    expect(Object.values(shard.status().rejects).reduce((a, b) => a + b, 0)).toBe(0);

    // phase 2: ordinary traffic; the weights that saw the edge values must still move
    for (let k = 0; k < 400; k++) {
      const price = k % 10;
      await js.publish(
        s.labels(0),
        exampleJson(
          `q${k}`,
          k % 2 ? 'victim' : `u${k % 7}`,
          String(price),
          String(price * 100),
          price >= 5 ? 1 : 0,
        ),
      );
    }
    await acked(n + 400, 'ordinary traffic');
    const after = read();
    for (const x of [...after.user, ...after.dense]) expect(Number.isFinite(x)).toBe(true);
    const moved = (a: number[], b: number[]) => a.map((x, i) => Math.abs(b[i]! - x));
    // an optimizer state at +Infinity moves a weight by exactly 0: every one of these moved
    for (const d of [...moved(afterEdge.user, after.user), ...moved(afterEdge.dense, after.dense)]) {
      expect(d).toBeGreaterThan(0);
    }
    // the robustly scaled feature and the user's row learn at an ordinary pace
    expect(Math.max(...moved(afterEdge.user, after.user))).toBeGreaterThan(1e-3);
    expect(Math.max(...moved(afterEdge.dense, after.dense))).toBeGreaterThan(1e-3);
    expect(w.status().deadLetters.NON_FINITE_GRADIENT).toBe(0);
    expect(NUMERIC_INPUT_LIMIT).toBe(1e6);
  }, 120_000);

  it('dead-letters a batch whose gradient is non-finite, once, without retrying or pushing it', async () => {
    const name = await cluster();
    const s = subjects(name);
    // a stand-in shard over real NATS serving poisoned rows (values 3e38: the logit overflows)
    const core = new ShardCore({
      spec,
      shard: 0,
      shards: 1,
      checkOwnership: true,
      maxPushRows: 1 << 20,
      maxPullKeys: 1 << 20,
      sketchWidth: 1 << 10,
      recentPushIds: 1000,
      dcMaxWorkers: 4,
      dcMaxRowsPerWorker: 1 << 12,
    });
    const nc = await connectNats({ servers: nats.url }, 'poisoned-shard');
    stops.push(() => nc.close());
    let pushes = 0;
    frameEndpoint(nc, s.pull(0), (data) => {
      const r = core.pull(decodePull(data));
      for (const t of r.tables) t.values.fill(3e38);
      return encodePullReply(r);
    });
    frameEndpoint(nc, s.push(0), () => {
      pushes++;
      throw new Error('no push may arrive');
    });
    await nc.flush();
    const w = await worker(name, 'num-b');
    const js = nats.nc.jetstream();
    const N = 20;
    for (let k = 0; k < N; k++) await js.publish(s.labels(0), exampleJson(`x${k}`, `u${k}`, '1', '1', k % 2));
    await waitFor(() => w.status().deadLetters.NON_FINITE_GRADIENT === N, {
      timeoutMs: 30_000,
      message: () =>
        `all ${N} dead-lettered; ${JSON.stringify(w.status().deadLetters)} ${JSON.stringify(w.status().counters)}`,
    });
    await waitFor(async () => (await consumerBacklog(nats.nc, name, 1)).ackPending === 0, {
      message: 'dead-lettered events acked',
    });
    const st = w.status();
    expect(st.counters.failedBatches).toBe(0);
    expect(st.counters.nonFiniteBatches).toBeGreaterThanOrEqual(1);
    expect(pushes).toBe(0);
    const jsm = await nats.nc.jetstreamManager();
    const dl = await jsm.streams.info(s.deadLetterStream);
    expect(dl.state.messages).toBe(N);
  }, 60_000);

  it('a shard refuses a whole push with a non-finite or float32-overflowing gradient', async () => {
    const name = await cluster();
    const s = subjects(name);
    const dir = await mkdtemp(join(tmpdir(), 'freshet-num-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    const shard = await startShard({
      cluster: name,
      shard: 0,
      shards: 1,
      nats: { servers: nats.url },
      model: spec,
      dataDir: dir,
    });
    stops.push(() => shard.stop());
    const keys = new Uint32Array(4);
    featureId('user', 'a', keys, 0);
    featureId('user', 'b', keys, 2);
    const denseDim = spec.tables[dense]!.dim;
    const push = (id: string, bad: number): PushRequest => ({
      id,
      worker: 'w',
      clock: 0,
      base: 0,
      tables: [
        // a valid sparse part first: it must not be applied either
        { t: wide, dim: 1, keys, grads: Float32Array.of(0.5, -0.5), counts: Uint32Array.of(1, 1) },
        {
          t: dense,
          dim: denseDim,
          keys: new Uint32Array(2),
          grads: Float32Array.from({ length: denseDim }, (_, i) => (i === 0 ? bad : 0.1)),
          counts: Uint32Array.of(2),
        },
      ],
    });
    const snapshot = () =>
      shard.core.pull({
        worker: '',
        clock: 0,
        tables: [
          { t: wide, keys: keys.slice() },
          { t: dense, keys: new Uint32Array(2) },
        ],
      });
    const before = snapshot();
    const version = shard.core.version;
    for (const [bad, code] of [
      [Number.NaN, 'NON_FINITE'],
      [Number.POSITIVE_INFINITY, 'NON_FINITE'],
      [1e20, 'GRAD_OVERFLOW'],
      [-3e38, 'GRAD_OVERFLOW'],
    ] as const) {
      const err = await requestBytes(nats.nc, s.push(0), encodePush(push(`bad-${code}-${bad}`, bad)))
        .then(decodePushReply)
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(hasCode(err, code), `${bad}: ${String(err)}`).toBe(true);
    }
    expect(shard.core.version).toBe(version);
    const after = snapshot();
    for (let t = 0; t < 2; t++) expect([...after.tables[t]!.values]).toEqual([...before.tables[t]!.values]);
    expect(shard.status().rejects).toMatchObject({ NON_FINITE: 2, GRAD_OVERFLOW: 2 });
    // the same push with a large but safe gradient is applied, whole
    decodePushReply(await requestBytes(nats.nc, s.push(0), encodePush(push('ok', 1e6))));
    expect(shard.core.version).toBe(version + 1);
    expect([...snapshot().tables[0]!.values]).not.toEqual([...before.tables[0]!.values]);
  }, 60_000);

  it('a push that would overflow optimizer state is rolled back, refused and never logged', async () => {
    const name = await cluster();
    const s = subjects(name);
    const dir = await mkdtemp(join(tmpdir(), 'freshet-num-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    const ftrl = parseModelSpec({
      name: 'ftrl',
      tables: [{ name: 'emb', dim: 4, optimizer: { kind: 'ftrl' }, init: { kind: 'normal', std: 0.1 } }],
    });
    const shard = await startShard({
      cluster: name,
      shard: 0,
      shards: 1,
      nats: { servers: nats.url },
      model: ftrl,
      dataDir: dir,
    });
    stops.push(() => shard.stop());
    const keys = new Uint32Array(2 * 24);
    for (let i = 0; i < 24; i++) featureId('user', `f${i}`, keys, 2 * i);
    let ids = 0;
    // every gradient finite and below GRAD_OVERFLOW; × the example count (2^24) one of them
    // squares past float32 in FTRL's n
    const push = (g: number, examples: number, huge = -1): Uint8Array => {
      const grads = new Float32Array(24 * 4).fill(g);
      if (huge >= 0) grads.fill(1e15, huge * 4, huge * 4 + 4);
      return encodePush({
        id: `f${ids++}`,
        worker: 'w',
        clock: 0,
        base: shard.core.version,
        examples,
        tables: [{ t: 0, dim: 4, keys, grads, counts: new Uint32Array(24).fill(1) }],
      });
    };
    const send = (frame: Uint8Array) =>
      requestBytes(nats.nc, s.push(0), frame)
        .then(decodePushReply)
        .then(
          () => undefined,
          (e: unknown) => e,
        );
    const values = () => [...shard.core.pull({ tables: [{ t: 0, keys: keys.slice() }] }).tables[0]!.values];
    expect(await send(push(0.01, 16))).toBeUndefined();
    const before = values();
    const version = shard.core.version;
    const err = await send(push(0.01, 1 << 24, 20));
    expect(hasCode(err, 'NON_FINITE_STATE'), String(err)).toBe(true);
    expect(shard.core.version).toBe(version);
    expect(values()).toEqual(before);
    expect(shard.status().rejects).toMatchObject({ NON_FINITE_STATE: 1 });
    // the same rows keep learning
    for (let k = 0; k < 3; k++) expect(await send(push(-0.02, 16))).toBeUndefined();
    const learned = values();
    for (let i = 0; i < learned.length; i++) {
      expect(Number.isFinite(learned[i]!)).toBe(true);
      expect(learned[i]).not.toBe(before[i]);
    }
    // the log holds the four accepted pushes only (and delta records): a reload from it ends
    // exactly here, with nothing to refuse (a logged refused push would count as rejected)
    const info = await shard.reload();
    expect(info.checkpointSegment).toBeNull();
    expect(info.replayedRecords).toBeGreaterThanOrEqual(4);
    expect(info.rejectedRecords).toBe(0);
    expect(shard.core.version).toBe(version + 3);
    expect(values()).toEqual(learned);
  }, 60_000);

  it('a worker dead-letters a batch a shard refuses for non-finite state, and the partition moves on', async () => {
    const name = await cluster();
    const s = subjects(name);
    const shard = await startShard({
      cluster: name,
      shard: 0,
      shards: 1,
      nats: { servers: nats.url },
      model: spec,
    });
    stops.push(() => shard.stop());
    const w = await worker(name, 'num-c');
    const js = nats.nc.jetstream();
    const backlogEmpty = (what: string) =>
      waitFor(
        async () => {
          const b = await consumerBacklog(nats.nc, name, 1);
          return b.pending === 0 && b.ackPending === 0;
        },
        { timeoutMs: 30_000, message: what },
      );
    for (let k = 0; k < 20; k++)
      await js.publish(s.labels(0), exampleJson(`a${k}`, `a${k}`, '1', '1', k % 2));
    await waitFor(() => w.status().counters.acked >= 20, { timeoutMs: 30_000, message: 'first 20 acked' });

    // The victim's row holds a state no finite gradient can be applied to (Adam's m at 3e38,
    // v at 0: the next step is ≈ lr·m/ε, past float32), as a corrupted or extreme state would.
    const tab = shard.core.tables[wide]!;
    const key = new Uint32Array(2);
    featureId('user', 'victim', key);
    let r = tab.store.find(key[0]!, key[1]!);
    if (r < 0) r = tab.create(key[0]!, key[1]!, tickOf(Date.now()));
    tab.steps = 10_000; // bias correction ≈ 1: the step is lr·m/(√v + ε) whatever the gradient
    const f = tab.store.chunkF(r);
    const o = tab.store.valueOffset(r);
    f.fill(3e38, o + tab.dim, o + 2 * tab.dim);
    f.fill(0, o + 2 * tab.dim, o + 3 * tab.dim);
    const victimBefore = [...f.subarray(o, o + 3 * tab.dim)];
    const version = shard.core.version;

    await js.publish(s.labels(0), exampleJson('v0', 'victim', '1', '1', 1));
    await waitFor(() => w.status().deadLetters.NON_FINITE_STATE >= 1, {
      timeoutMs: 30_000,
      message: () => `victim dead-lettered: ${JSON.stringify(w.status().deadLetters)}`,
    });
    await backlogEmpty('victim batch acked after dead-lettering');
    // the partition moves on: later events of other users are trained
    for (let k = 0; k < 20; k++)
      await js.publish(s.labels(0), exampleJson(`b${k}`, `b${k}`, '2', '2', k % 2));
    await waitFor(() => w.status().counters.acked >= 41, {
      timeoutMs: 30_000,
      message: () => `later events acked: ${JSON.stringify(w.status().counters)}`,
    });
    await backlogEmpty('nothing left in the partition');
    expect(shard.core.version).toBeGreaterThan(version);

    const st = w.status();
    expect(st.deadLetters.NON_FINITE_STATE).toBe(1);
    expect(st.deadLetters.NON_FINITE_GRADIENT).toBe(0);
    expect(st.counters.failedBatches).toBe(0);
    expect(shard.status().rejects.NON_FINITE_STATE).toBe(1);
    // the refused push was rolled back whole: the victim's row is as it was
    const rr = tab.store.find(key[0]!, key[1]!);
    const ff = tab.store.chunkF(rr);
    const oo = tab.store.valueOffset(rr);
    expect([...ff.subarray(oo, oo + 3 * tab.dim)]).toEqual(victimBefore);
    const jsm = await nats.nc.jetstreamManager();
    const dl = await jsm.streams.getMessage(s.deadLetterStream, { last_by_subj: s.deadLetter });
    expect(dl.header?.get('Freshet-Reason')).toBe('NON_FINITE_STATE');
  }, 90_000);
});
