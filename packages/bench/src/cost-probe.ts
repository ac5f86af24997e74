import { readFileSync } from 'node:fs';
import {
  createModel,
  criteoWideDeepConfig,
  DenseOptimizer,
  parseCriteoLine,
  type Example,
} from '@freshet/model';
import { connectNats, startNatsServer } from '@freshet/nats';
import { AckPolicy } from 'nats';
import { datasetDictionary, readCriteo, restamped } from '@freshet/client';
import {
  compressEvent,
  decodeDelta,
  encodeDelta,
  encodeEvent,
  eventDictionaryId,
  inflateEvent,
  type PushRequest,
} from '@freshet/protocol';
import { RowTable } from '@freshet/serving';
import { ShardCore } from '@freshet/shard';
import { runComputeBench } from './compute-bench.js';
import { procCpuSeconds } from './proc-cpu.js';
import { measurePartCosts } from './part-probe.js';
import { measureThreadHandoff } from './thread-probe.js';

/**
 * Per-message and per-row costs of this machine, measured with the same code the roles run: the
 * inputs of the scaling model (scaling-model.ts). Every figure is CPU or wall time of ONE core.
 */
export interface MeasuredCosts {
  /** Sequential request-reply round trip, 64 B payload (µs, p50). */
  natsRttUs: number;
  /** Node endpoint CPU per message sent or received (µs): pipelined request-reply, one thread. */
  nodeMsgUs: number;
  /** Node endpoint CPU per payload byte (ns) of one send or one receive of a large message. */
  nodeByteNs: number;
  /** nats-server CPU per message routed (µs) and per byte (ns). */
  natsMsgUs: number;
  natsByteNs: number;
  /** Shard: optimizer apply per pushed row (Adam, dim 16), µs; pull per key; delta take+encode per row. */
  applyRowUs: number;
  pullRowUs: number;
  deltaRowUs: number;
  /** Serving: decode + upsert of one delta row (dim 16), µs. */
  servingRowUs: number;
  /** Shard memory per row, bytes (Adam, dim 16: values + two moments + index + metadata). */
  shardBytesPerRow: number;
  /**
   * Shard host with shard threads: its thread's CPU to hand one host-message part (a pull of 24
   * rows) to a shard thread and take the reply, parts pipelined (µs; `thread-probe.ts`). Absent
   * from results measured before shard threads existed (charged as 0 there).
   */
  threadPartUs?: number;
  /**
   * The receiving thread's CPU per part handed over (unpacking it, packing the reply; the shard's
   * own work not counted), µs: reported, to check the model's charge of 2 × `threadPartUs` per
   * part (the model does not use it). Absent from results measured before.
   */
  threadPartRecvUs?: number;
  /**
   * What each part beyond the first adds when one host message hands several parts to a thread
   * as one group (shard `HandOffs`: the parts of batches a worker sends together), host thread's
   * CPU (µs). Absent from results measured before groups: each part charged `threadPartUs`.
   */
  threadGroupPartUs?: number;
  /**
   * One part of a batch (its request to one shard) beyond its rows, µs (`part-probe.ts`): the
   * worker's main thread per pull part and per push part (frames, promises, replies, the rows put
   * in place), and the shard's per pull and per push request of one row. Absent from results
   * measured before: charged 0 there, which flatters a batch spread over many shards.
   */
  workerPullPartUs?: number;
  workerPushPartUs?: number;
  shardPullPartUs?: number;
  shardPushPartUs?: number;
  /** Worker: gradient compute per example, one thread (µs). */
  computeExampleUs: number;
  /** Worker: feature encoding per example on the main thread (µs). */
  encodeExampleUs: number;
  /** Unique (table, key) rows in a window of E examples of the data: D(E) = a · E^b fitted on E ≥ 256. */
  rows: { a: number; b: number; points: Array<[number, number]> };
  /** Floats of the dense tables (pulled and pushed whole by every batch). */
  denseFloats: number;
  /** Worker dense replica: its optimizer (Adam, `DenseOptimizer`) per dense float per batch (ns). */
  denseApplyFloatNs: number;
  /** Shard: an additive dense push (a replica's flush, `add: true`) per float (ns). */
  denseAddFloatNs: number;
  /**
   * The feedback path through JetStream, per 667-byte event: the publisher's CPU (pipelined
   * publish with acks), the consumer's (fetch + ack), and nats-server's (store, deliver, ack), µs.
   */
  jsPublishUs: number;
  jsConsumeUs: number;
  jsServerUs: number;
  /** The part of `jsServerUs` spent delivering and taking acks (the rest is storing); absent in older cost files. */
  jsServerDeliverUs?: number;
  /**
   * Criteo events as `bench --encoding msgpack --compress-events` publishes them: bytes plain and
   * compressed (zlib, a dictionary of 2000 other events), the publisher's CPU to compress one and
   * the worker's to inflate one (µs). Absent in older cost files.
   */
  events?: { msgpackBytes: number; compressedBytes: number; deflateUs: number; inflateUs: number };
}

const q50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const r3 = (x: number) => Math.round(x * 1000) / 1000;

async function measureNats(): Promise<
  Pick<MeasuredCosts, 'natsRttUs' | 'nodeMsgUs' | 'nodeByteNs' | 'natsMsgUs' | 'natsByteNs'>
> {
  const server = await startNatsServer({ maxPayload: 8 * 1024 * 1024 });
  const a = await connectNats({ servers: [server.url] }, 'probe-responder');
  const b = await connectNats({ servers: [server.url] }, 'probe-requester');
  try {
    const small = new Uint8Array(64);
    a.subscribe('probe.rr', { callback: (_e, m) => m.respond(small) });
    const big = new Uint8Array(256 * 1024);
    a.subscribe('probe.big', { callback: (_e, m) => m.respond(small) });
    await a.flush();
    for (let i = 0; i < 500; i++) await b.request('probe.rr', small);
    const rtt: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const t = performance.now();
      await b.request('probe.rr', small);
      rtt.push((performance.now() - t) * 1000);
    }
    // Pipelined: both endpoints in this one thread, so wall time ≈ their CPU (4 endpoint
    // operations per request: send, receive, send reply, receive reply).
    const pipelined = async (subject: string, payload: Uint8Array, n: number, depth: number) => {
      const s0 = procCpuSeconds(server.pid) ?? 0;
      const t0 = performance.now();
      let sent = 0;
      const lane = async () => {
        while (sent < n) {
          sent++;
          await b.request(subject, payload, { timeout: 10_000 });
        }
      };
      await Promise.all(Array.from({ length: depth }, lane));
      return {
        us: ((performance.now() - t0) * 1000) / n,
        serverUs: (((procCpuSeconds(server.pid) ?? 0) - s0) * 1e6) / n,
      };
    };
    await pipelined('probe.rr', small, 5000, 64);
    const p = await pipelined('probe.rr', small, 40_000, 64);
    const g = await pipelined('probe.big', big, 1500, 8);
    const nodeMsgUs = p.us / 4;
    const natsMsgUs = p.serverUs / 2;
    return {
      natsRttUs: r3(q50(rtt)),
      nodeMsgUs: r3(nodeMsgUs),
      // One send and one receive of the big payload per request: per endpoint operation, half.
      nodeByteNs: r3(Math.max(0, ((g.us - 4 * nodeMsgUs) * 1000) / big.length / 2)),
      natsMsgUs: r3(natsMsgUs),
      natsByteNs: r3(Math.max(0, ((g.serverUs - 2 * natsMsgUs) * 1000) / big.length)),
    };
  } finally {
    await b.close();
    await a.close();
    await server.stop();
  }
}

/** JetStream costs per feedback event: publish with acks, fetch and ack, and the server's CPU. */
async function measureJetStream(): Promise<
  Pick<MeasuredCosts, 'jsPublishUs' | 'jsConsumeUs' | 'jsServerUs' | 'jsServerDeliverUs'>
> {
  const server = await startNatsServer({ maxPayload: 8 * 1024 * 1024 });
  const nc = await connectNats({ servers: [server.url] }, 'probe-js');
  try {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: 'probe', subjects: ['probe.fb'] });
    await jsm.consumers.add('probe', { durable_name: 'probe', ack_policy: AckPolicy.Explicit });
    const js = nc.jetstream();
    const event = new Uint8Array(667).fill(7);
    const n = 6000;
    const window = 256;
    const s0 = procCpuSeconds(server.pid) ?? 0;
    let t0 = performance.now();
    for (let i = 0; i < n; i += window) {
      await Promise.all(Array.from({ length: Math.min(window, n - i) }, () => js.publish('probe.fb', event)));
    }
    const jsPublishUs = ((performance.now() - t0) * 1000) / n;
    const s1 = procCpuSeconds(server.pid) ?? 0;
    const consumer = await js.consumers.get('probe', 'probe');
    t0 = performance.now();
    let got = 0;
    while (got < n) {
      const batch = await consumer.fetch({ max_messages: Math.min(window, n - got), expires: 2000 });
      for await (const m of batch) {
        m.ack();
        got++;
      }
    }
    await nc.flush();
    const jsConsumeUs = ((performance.now() - t0) * 1000) / n;
    const s2 = procCpuSeconds(server.pid) ?? 0;
    const jsServerUs = ((s2 - s0) * 1e6) / n;
    const jsServerDeliverUs = ((s2 - s1) * 1e6) / n;
    return {
      jsPublishUs: r3(jsPublishUs),
      jsConsumeUs: r3(jsConsumeUs),
      jsServerUs: r3(jsServerUs),
      jsServerDeliverUs: r3(jsServerDeliverUs),
    };
  } finally {
    await nc.close();
    await server.stop();
  }
}

function measureShardAndServing(): Pick<
  MeasuredCosts,
  | 'applyRowUs'
  | 'pullRowUs'
  | 'deltaRowUs'
  | 'servingRowUs'
  | 'shardBytesPerRow'
  | 'denseFloats'
  | 'denseApplyFloatNs'
  | 'denseAddFloatNs'
> {
  const model = createModel(criteoWideDeepConfig());
  const spec = model.spec;
  const t = spec.tables.findIndex((x) => x.kind === 'sparse' && x.dim === 16);
  if (t < 0) throw new Error('no dim-16 sparse table in the Criteo model');
  const denseFloats = spec.tables.filter((x) => x.kind === 'dense').reduce((s, x) => s + x.dim, 0);
  const core = new ShardCore({
    spec,
    shard: 0,
    shards: 1,
    checkOwnership: false,
    maxPushRows: 1 << 20,
    maxPullKeys: 1 << 20,
    sketchWidth: 1 << 12,
    recentPushIds: 1024,
    dcMaxWorkers: 4,
    dcMaxRowsPerWorker: 1 << 16,
  });
  const universe = 1 << 20;
  const n = 4096;
  const dim = 16;
  let seed = 7;
  const rnd = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed;
  };
  const keysOf = (start: number | undefined) => {
    const k = new Uint32Array(2 * n);
    const used = new Set<number>();
    for (let i = 0; i < n; i++) {
      let x = start !== undefined ? start + i : rnd() % universe;
      while (used.has(x)) x = (x + 1) % universe;
      used.add(x);
      k[2 * i] = x;
      k[2 * i + 1] = 0;
    }
    return k;
  };
  const grads = new Float32Array(n * dim).fill(1e-3);
  const counts = new Uint32Array(n).fill(1);
  let id = 0;
  const push = (keys: Uint32Array): PushRequest => ({
    id: `p${id++}`,
    worker: 'probe',
    clock: 0,
    base: core.version,
    tables: [{ t, dim, keys, grads, counts }],
  });
  // Fill the table (memory per row at a million rows), then time updates of existing rows.
  for (let s = 0; s < universe; s += n) core.applyPush(push(keysOf(s)), Date.now());
  core.takeDelta(1 << 30);
  const shardBytesPerRow = core.bytes / core.rows;
  const pushes = Array.from({ length: 24 }, () => push(keysOf(undefined)));
  let t0 = performance.now();
  for (const p of pushes) core.applyPush({ ...p, base: core.version }, Date.now());
  const applyRowUs = ((performance.now() - t0) * 1000) / (pushes.length * n);
  const pulls = Array.from({ length: 24 }, () => ({
    worker: 'probe',
    tables: [{ t, keys: keysOf(undefined) }],
  }));
  t0 = performance.now();
  for (const p of pulls) core.pull(p);
  const pullRowUs = ((performance.now() - t0) * 1000) / (pulls.length * n);
  // Deltas: rows dirtied by pushes, taken and encoded as the shard's delta publisher does.
  let deltaUs = 0;
  let deltaRows = 0;
  const frames: Uint8Array[] = [];
  for (let i = 0; i < 16; i++) {
    core.applyPush(push(keysOf(undefined)), Date.now());
    t0 = performance.now();
    const d = core.takeDelta(8 << 20);
    const f = encodeDelta({
      shard: 0,
      seq: i + 1,
      version: core.version,
      ts: Date.now(),
      eventTs: [],
      tables: d.tables,
    });
    deltaUs += (performance.now() - t0) * 1000;
    for (const x of d.tables) deltaRows += x.keys.length / 2;
    frames.push(f);
  }
  const rt = new RowTable(dim);
  t0 = performance.now();
  let servedRows = 0;
  for (let rep = 0; rep < 4; rep++) {
    for (const f of frames) {
      const d = decodeDelta(f);
      for (const x of d.tables) {
        const tab = x.dim === dim ? rt : new RowTable(x.dim);
        const m = x.keys.length >>> 1;
        for (let i = 0; i < m; i++) tab.upsert(x.keys[2 * i]!, x.keys[2 * i + 1]!, x.values, i * x.dim);
        servedRows += m;
      }
    }
  }
  const servingRowUs = ((performance.now() - t0) * 1000) / servedRows;
  // The dense replica: a worker's optimizer step over the whole MLP per batch, and the shard's
  // additive push of a flush (the shard adds the weight change: no optimizer, no rows).
  const denseTables = spec.tables.flatMap((x, i) => (x.kind === 'dense' ? [i] : []));
  const opts = denseTables.map((i) => new DenseOptimizer(spec.tables[i]!));
  const ws = denseTables.map((i) => new Float32Array(spec.tables[i]!.dim).fill(0.01));
  const gs = ws.map((w) => new Float32Array(w.length).fill(1e-3));
  const reps = 64;
  for (let r = 0; r < 192; r++) opts.forEach((o, k) => o.apply(ws[k]!, gs[k]!, 1, 256));
  t0 = performance.now();
  for (let r = 0; r < reps; r++) opts.forEach((o, k) => o.apply(ws[k]!, gs[k]!, 1, 256));
  const denseApplyFloatNs = ((performance.now() - t0) * 1e6) / (reps * denseFloats);
  const addPush = (): PushRequest => ({
    id: `a${id++}`,
    worker: 'probe',
    clock: 0,
    base: core.version,
    examples: 2048,
    add: true,
    tables: denseTables.map((i, k) => ({
      t: i,
      dim: spec.tables[i]!.dim,
      keys: new Uint32Array(2),
      grads: gs[k]!,
      counts: Uint32Array.of(2048),
    })),
  });
  for (let r = 0; r < 192; r++) core.applyPush(addPush(), Date.now());
  t0 = performance.now();
  for (let r = 0; r < reps; r++) core.applyPush(addPush(), Date.now());
  const denseAddFloatNs = ((performance.now() - t0) * 1e6) / (reps * denseFloats);
  return {
    applyRowUs: r3(applyRowUs),
    pullRowUs: r3(pullRowUs),
    deltaRowUs: r3(deltaUs / deltaRows),
    servingRowUs: r3(servingRowUs),
    shardBytesPerRow: Math.round(shardBytesPerRow),
    denseFloats,
    denseApplyFloatNs: r3(denseApplyFloatNs),
    denseAddFloatNs: r3(denseAddFloatNs),
  };
}

/**
 * Criteo events encoded as a replay publishes them (msgpack, re-stamped), compressed with a
 * dictionary of 2000 events that are not among the 1000 measured.
 */
export async function measureEvents(path: string): Promise<NonNullable<MeasuredCosts['events']>> {
  const data = `criteo:${path}`;
  const dictionary = await datasetDictionary({ data, skip: 1000, samples: 2000, encoding: 'msgpack' });
  const plain: Uint8Array[] = [];
  for await (const e of readCriteo(path, { limit: 1000, idPrefix: 'probe' }))
    plain.push(encodeEvent(restamped(e, Date.now()), 'msgpack'));
  const o = { dictionary };
  for (const b of plain.slice(0, 200)) compressEvent(b, o);
  let t0 = performance.now();
  const packed = plain.map((b) => compressEvent(b, o));
  const deflateUs = ((performance.now() - t0) * 1000) / plain.length;
  const dictionaries = new Map([[eventDictionaryId(dictionary), dictionary]]);
  for (const b of packed.slice(0, 200)) inflateEvent(b, dictionaries, 65_536);
  t0 = performance.now();
  for (const b of packed) inflateEvent(b, dictionaries, 65_536);
  const inflateUs = ((performance.now() - t0) * 1000) / packed.length;
  const mean = (xs: Uint8Array[]) => xs.reduce((a, b) => a + b.length, 0) / xs.length;
  return {
    msgpackBytes: Math.round(mean(plain)),
    compressedBytes: Math.round(mean(packed)),
    deflateUs: r3(deflateUs),
    inflateUs: r3(inflateUs),
  };
}

/** Unique rows per window of E examples of a Criteo file, with a Heaps'-law fit. */
export function measureRows(
  path: string,
  limit = 10_000,
): { rows: MeasuredCosts['rows']; encodeExampleUs: number } {
  const model = createModel(criteoWideDeepConfig());
  const examples: Example[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const e = line ? parseCriteoLine(line) : undefined;
    if (e) examples.push(e);
    if (examples.length >= limit) break;
  }
  const points: Array<[number, number]> = [];
  for (let s = 0; s + 256 <= Math.min(examples.length, 2048); s += 256)
    model.encode(examples.slice(s, s + 256));
  const te = performance.now();
  let encoded = 0;
  for (let s = 0; s + 256 <= examples.length; s += 256, encoded += 256)
    model.encode(examples.slice(s, s + 256));
  const encodeExampleUs = r3(((performance.now() - te) * 1000) / Math.max(1, encoded));
  for (const w of [16, 64, 256, 1024, 4096, examples.length]) {
    if (w > examples.length) continue;
    let rows = 0;
    let windows = 0;
    for (let s = 0; s + w <= examples.length && windows < 8; s += w, windows++) {
      const b = model.encode(examples.slice(s, s + w));
      for (const sp of b.sparse) rows += sp.keys.length / 2;
    }
    points.push([w, Math.round(rows / windows)]);
  }
  // Least squares on log-log over the windows of ≥ 256 examples.
  const fit = points.filter(([e]) => e >= 256);
  const xs = fit.map(([e]) => Math.log(e));
  const ys = fit.map(([, d]) => Math.log(d));
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < xs.length; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  const b = den > 0 ? num / den : 1;
  return { rows: { a: r3(Math.exp(my - b * mx)), b: r3(b), points }, encodeExampleUs };
}

/**
 * Measures every cost the scaling model needs on this machine (about 15 s): NATS messages and
 * bytes (a local nats-server), shard apply/pull/delta and serving apply per row (the roles' own
 * code, in this process), worker compute per example, and the key statistics of the data.
 */
export async function measureCosts(dataPath: string): Promise<MeasuredCosts> {
  const nats = await measureNats();
  const js = await measureJetStream();
  const rows = measureShardAndServing();
  const { threadPartUs, threadPartRecvUs, threadGroupPartUs } = await measureThreadHandoff();
  const parts = await measurePartCosts(dataPath);
  const c = await runComputeBench({ batches: [256], steps: 10 });
  const eps = Number(c.wide_deep_b256_examples_per_s ?? 0);
  return {
    ...nats,
    ...js,
    ...rows,
    threadPartUs,
    threadPartRecvUs,
    threadGroupPartUs,
    workerPullPartUs: parts.workerPullPartUs,
    workerPushPartUs: parts.workerPushPartUs,
    shardPullPartUs: parts.shardPullPartUs,
    shardPushPartUs: parts.shardPushPartUs,
    computeExampleUs: eps > 0 ? r3(1e6 / eps) : 250,
    ...measureRows(dataPath),
    events: await measureEvents(dataPath),
  };
}
