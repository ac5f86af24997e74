import { deltaIntervalOf } from '@freshet/shard';
import type { MeasuredCosts } from './cost-probe.js';

/**
 * A discrete-event simulation of a Freshet cluster, fed by costs measured on this machine
 * (cost-probe.ts). It follows every batch through the loop — worker encode, one pull per shard
 * touched (through a NATS server, queueing at the shard), gradient compute on a thread pool, one
 * push per shard, acks — and every shard's delta tick through NATS to a serving replica, which
 * applies it; freshness is event time → applied at the replica. Every process, thread and NATS
 * server is a FIFO resource (a lane busy until some time), so queueing, fork-join waits (a batch
 * waits for its slowest shard) and hot spots (the shard holding the dense tensor) come out of the
 * run rather than out of a formula. Serving replicas are identical (each applies every delta), so
 * one representative replica is simulated and the NATS fan-out to all of them is charged.
 *
 * Designs (knobs): dense tensors on one shard and pulled/pushed by every batch (built, the default);
 * split over several shards (not built); a dense replica on every worker flushed every N examples
 * (built: `dense.mode: 'replica'`); one multi-threaded shard process per machine (built: shard hosts
 * with shard threads).
 * With `sharedCores` every role runs on one machine of that many cores, as the local cluster does:
 * the model of this machine that `bench scaling` checks against a measured `bench cluster`.
 */

/** A cluster layout to simulate. */
export interface SimLayout {
  /** Machines per role; a worker machine runs 1 worker (1 main thread + cores−1 compute threads),
   *  a shard machine `cores` single-threaded shard processes, a NATS machine one multi-core server. */
  workerMachines: number;
  shardMachines: number;
  servingMachines: number;
  natsMachines: number;
  coresPerMachine: number;
  /** Compute threads per worker (default cores − 1). */
  computeThreads?: number;
  /**
   * All roles share one machine of this many cores (the local cluster): every role's CPU, the
   * feedback publisher's and the tap's, is also charged to that pool, and a run whose pool is full
   * is unstable.
   */
  sharedCores?: number;
}

/** Knobs of the simulated system (defaults: the roles' defaults). */
export interface SimKnobs {
  batch: number;
  /** Batches per worker between pull and ack at once. */
  inFlightBatches: number;
  /**
   * The worker's `overlapPush`: a batch frees its slot once its push is sent (at most
   * `inFlightBatches` such batches wait on push replies), so the next pull queues behind it.
   */
  overlapPush?: boolean;
  deltaIntervalMs: number;
  /** A partial batch is trained after this long. */
  maxWaitMs: number;
  /** One-way network latency per hop (µs). */
  netUs: number;
  /** Average row width of the sparse tables (Criteo wide&deep: dim 16 and dim 1 tables). */
  avgDim: number;
  /** Shards the dense tensors are spread over (1: each whole on one shard; model option `densePartFloats` splits them in parts). */
  denseShards: number;
  /** Single-threaded shard processes per shard machine (today: one per core). */
  shardProcsPerMachine?: number;
  /**
   * Dense replica on the workers (`dense.mode: 'replica'`): no dense tensor in a batch's pull or
   * push; each worker applies the dense gradient itself and every this many examples (or
   * `denseMaxDelayMs`) pushes the weight change (an add) and pulls the tensor back. Unset: per batch.
   */
  denseSyncExamples?: number;
  denseMaxDelayMs?: number;
  /**
   * One dense replica per worker machine (NOT BUILT): its worker processes apply their dense
   * gradients to it in shared memory and one of them flushes it, so dense flushes scale with
   * machines, not processes.
   */
  denseReplicaPerMachine?: boolean;
  /**
   * One shard process per shard machine: a batch fans out to machines and each machine publishes
   * one delta (built: shard hosts with worker `hostRouting` and shard `hostDeltas`), its shards in
   * T = `cores − 1` shard threads (built: shard host option `threads`, a shard per thread). Host
   * messages are answered by the host's thread and every shard thread (a NATS queue group, each
   * message to one of the T + 1 at random), so a host is one resource of T + 1 threads doing both
   * the message work and the row work. The member that gets a message serves the parts for its own
   * shards and hands each other part to its shard's thread: a request's rows over the threads
   * touch P = T(1 − (1 − 1/T)^rows) of them, P·T/(T + 1) of them handed over on average, each
   * charged 2 × `threadPartUs` (both ends of the hand-off).
   */
  shardPerHost?: boolean;
  /**
   * With `shardPerHost`: shard host processes per shard machine (default 1), each on
   * `cores / hostsPerMachine` threads (its own thread, the rest shard threads): fewer parts per
   * message to hand over, but more messages per batch, each answered by a host of fewer threads.
   */
  hostsPerMachine?: number;
  /** Bytes of one feedback event (the worker receives one message per example; Criteo: 667). */
  feedbackBytes?: number;
  /** A passive tap (bench cluster's) receives every pull, push and delta too. */
  tap?: boolean;
  /**
   * The feedback was published before the clock started (`bench cluster --backlog`): the
   * publisher's CPU is not charged; JetStream's delivery and the worker's fetch and ack are.
   */
  prepublished?: boolean;
  /**
   * CPU cost multipliers per process kind, from calibration against a measured local cluster
   * (`calibrate` in scaling-model.ts): what the cost probe leaves out or under-charges.
   */
  cpuScale?: Partial<Record<SimRole, number>>;
  /** Worker processes per worker machine (default 1), each a main thread and its share of the cores. */
  workerProcsPerMachine?: number;
  /** binary16 rows in pull replies (`halfPull`), push gradients (`halfPush`) and deltas (`halfDeltas`). */
  halfPull?: boolean;
  halfPush?: boolean;
  halfDeltas?: boolean;
  /** Pushes name their pull instead of repeating its keys (worker `pullSessions`): 8 bytes a row less. */
  pullSessions?: boolean;
  /**
   * int8 rows with a scale per row in pull replies, push gradients and deltas (worker `int8Pull`,
   * `int8Push`, shard `int8Deltas`): the average row as avgDim + 2 bytes (a slight over-charge of
   * the narrow rows, which go as binary16).
   */
  int8Rows?: boolean;
  /**
   * Compressed events (`feedbackBytes` is then their compressed size): the publisher's CPU to
   * compress one, the worker main thread's to inflate one (µs; the cost probe's `events`).
   */
  eventDeflateUs?: number;
  eventInflateUs?: number;
  /**
   * The shard option of the same name (built): each shard process (or host) stretches its delta
   * tick so that a serving node receives at most this many delta messages per second in all,
   * never beyond `deltaMaxIntervalMs` (the shard's default, 250 ms). Unset: every `deltaIntervalMs`.
   */
  deltaMsgsPerServingNode?: number;
  deltaMaxIntervalMs?: number;
  /**
   * Sliced serving (built: serving option `slice`, shard option `servingSlices`): serving nodes
   * hold a slice of the model each (the shards s with s % slices = i), this many nodes per slice;
   * a rank asks one node per other slice for its rows. Shard hosts split each tick's delta per
   * slice, so a node hears every host that runs a shard of its slice. Unset: every serving node
   * holds the whole model and receives every delta.
   */
  servingNodesPerSlice?: number;
  /**
   * At most this many slices (a rank asks every other slice for rows, so a deployment keeps the
   * count moderate and puts more nodes in each slice as it grows). Unset: no bound.
   */
  servingMaxSlices?: number;
  /**
   * Pull/push coalescing (NOT BUILT): this many batches of a worker machine's processes share one
   * pull and one push per shard (a per-machine client), so each pays 1/k of a message's fixed cost
   * and waits on average (k − 1)/2 batch arrivals of its machine for the others. Bytes unchanged
   * (the union of their keys is smaller: conservative).
   */
  coalesceBatches?: number;
  /**
   * The coalesced batches are one worker process's (built: worker `hostRouting.lingerMs`, a host
   * message waits that long for the parts of the process's next batches), not its machine's:
   * they arrive every fill, not every fill / processes, so each waits that much longer; and each
   * batch's part for a shard stays a part of its own: a message's parts for one thread go over
   * as one group (built: shard `HandOffs`), each part beyond a group's first charged
   * `threadGroupPartUs` (`threadPartUs` where the costs predate groups).
   */
  coalesceWithinProcess?: boolean;
  /**
   * The workers' adaptive linger (built: worker `hostRouting.hostMsgsPerS`): each worker
   * process's host messages wait 2000 × processes / hostMsgsPerS ms (at most 250) for its next
   * batches' parts, so 1 + linger / fill batches share a message (within the process, as
   * `coalesceWithinProcess`); replaces `coalesceBatches`.
   */
  hostMsgsPerS?: number;
  /**
   * A window's parts for one shard merged into one request (NOT BUILT): the batches that share a
   * host message (`hostMsgsPerS`, `coalesceBatches`) send each shard one pull and one push
   * between them, the union of their keys, so a part's fixed cost (`workerPullPartUs` and the
   * rest) is paid once per window and shard, not once per batch and shard.
   */
  mergeWindowParts?: boolean;
  /**
   * Workers address shard hosts, not their shards (NOT BUILT): a batch sends a threaded host one
   * part (all its rows there), which the host splits over its shard threads; the worker pays a
   * part's fixed cost per host touched, not per shard thread touched. Each thread's share is
   * still charged a shard part (`shardPullPartUs`) and its hand-off.
   */
  hostParts?: boolean;
  /** Serving processes per serving machine (default 1); with sliced serving each holds a slice. */
  servingProcsPerMachine?: number;
  /** CPU the bench process spends per example beyond what is simulated (calibration only). */
  clientsUsPerExample?: number;
}

/** Process kinds the simulation charges CPU to (the local cluster's `cpu_s` roles; clients = the bench process). */
export type SimRole = 'worker' | 'shard' | 'serving' | 'nats' | 'clients';

export const defaultKnobs: SimKnobs = {
  batch: 256,
  inFlightBatches: 2,
  deltaIntervalMs: 5,
  maxWaitMs: 50,
  netUs: 50,
  avgDim: 8.5,
  denseShards: 1,
};

/** What one simulation run measured. */
export interface SimResult {
  offered: number;
  /** Examples/s acked after warm-up. */
  throughput: number;
  stable: boolean;
  freshnessP50Ms: number | null;
  freshnessP99Ms: number | null;
  /** Busiest lane's utilisation per role, and the busiest resource overall. */
  utilisation: Record<string, number>;
  bottleneck: string;
  natsMsgsPerS: number;
  natsBytesPerS: number;
  /** Messages and bytes delivered to EACH serving replica per second. */
  servingBytesPerS: number;
  servingMsgsPerS: number;
  shardsTouchedPerBatch: number;
  /** Pull → compute → push → acked, per batch (ms). */
  batchP50Ms: number | null;
  /** Bus bytes per trained example (each message once, as `bench wire` counts), and the dense part. */
  busBytesPerExample: number;
  denseBytesPerExample: number;
  /** Examples per trained batch (batches close after maxWaitMs) and per dense replica flush. */
  examplesPerBatch: number;
  /** Batches whose pulls (and pushes) share a message to a host (coalescing; 1: none). */
  batchesPerMessage: number;
  /**
   * A batch's parts (requests, each its pull's and again its push's) as the worker sends them and
   * as the shards answer them: per shard thread touched, fewer with host parts or merged windows.
   */
  workerPartsPerBatch: number;
  shardPartsPerBatch: number;
  examplesPerFlush: number | null;
  /** CPU µs per trained example by process kind (the local cluster's `cpu_s` to compare with). */
  cpuUsPerExample: Record<'worker' | 'shard' | 'serving' | 'nats' | 'clients', number>;
}

/** The window of a sampled lane's recent load (µs). */
const RECENT_US = 100_000;

class Resource {
  readonly lanes: Float64Array;
  busy = 0;
  /** Calibrated multiplier on every cost charged here. */
  scale = 1;
  /** Identical processes this one stands for (serving replicas): CPU is charged for each. */
  copies = 1;
  /** CPU time (µs) of every job: busy × speed. */
  cpu = 0;
  /** A machine's cores that this resource's work also occupies (the local cluster's shared CPU). */
  pool: Resource | undefined;
  constructor(
    readonly name: string,
    lanes: number,
    /** A multi-threaded server (nats-server) as one lane `speed` times as fast: cheaper to simulate. */
    readonly speed = 1,
    /**
     * No queue, only accounting: for a server far from saturation whose messages are booked out of
     * time order by inline fan-outs (a FIFO lane would make an early message wait behind a reply
     * booked for later). Saturation still shows as utilisation > 1, which makes the run unstable.
     */
    readonly fluid = false,
  ) {
    this.lanes = new Float64Array(Math.max(1, lanes));
  }
  /**
   * Set (a seeded random source): the wait in the queue is drawn, not booked. For a single-lane
   * server that every batch of a large cluster books inline (a shard host): bookings
   * come out of time order by up to a worker's own backlog, and a FIFO lane would make a
   * message wait behind every one booked before it, even one arriving later (at 1000 machines
   * ~10 ms per message at 40% load). The wait is M/G/1's (Pollaczek–Khinchine) at the lane's
   * recent load: none with probability 1 − ρ, else exponential with mean E[S²] / (2 E[S] (1 − ρ)),
   * so a batch's fork-join over hundreds of hosts still waits for the slowest of its draws.
   * Like a fluid server's, its saturation shows as utilisation ≥ 1, which makes the run unstable.
   */
  sampleWait: (() => number) | undefined;
  private recentT = 0;
  private recentBusy = 0;
  private recentSq = 0;
  /** Serves a job arriving at `t` needing `us` of one lane; returns its finish time. */
  run(t: number, charged: number): number {
    const cost = charged * this.scale;
    const us = cost / this.speed;
    this.cpu += cost * this.copies;
    if (this.pool) this.pool.busy += cost * this.copies;
    if (this.fluid) {
      this.busy += us;
      return t + us;
    }
    if (this.sampleWait) {
      this.busy += us;
      // load over the last ~RECENT_US (exponentially decayed), jobs and their squares alike
      const at = Math.max(this.recentT, t);
      const decay = Math.exp(-(at - this.recentT) / RECENT_US);
      this.recentT = at;
      this.recentBusy = this.recentBusy * decay + us;
      this.recentSq = this.recentSq * decay + us * us;
      const rho = Math.min(0.99, this.recentBusy / RECENT_US);
      const waitGivenQueued = this.recentSq / this.recentBusy / (2 * (1 - rho));
      const wait = this.sampleWait() < rho ? -Math.log(1 - this.sampleWait()) * waitGivenQueued : 0;
      return t + wait + us;
    }
    let best = 0;
    for (let i = 1; i < this.lanes.length; i++) if (this.lanes[i]! < this.lanes[best]!) best = i;
    const start = Math.max(t, this.lanes[best]!);
    const end = start + us;
    this.lanes[best] = end;
    this.busy += us;
    return end;
  }
  backlog(now: number): number {
    // no queue to measure: overload shows as waits that grow without bound (ρ → 1)
    if (this.sampleWait) return 0;
    let m = 0;
    for (const l of this.lanes) m = Math.max(m, l - now);
    return m;
  }
  /** Busy time booked before the warm-up ended (utilisation counts the rest). */
  busyAtWarm = 0;
  utilisation(span: number, warm: number): number {
    return span > warm
      ? (this.busy - this.busyAtWarm) / ((span - warm) * this.lanes.length)
      : this.busy / (span * this.lanes.length);
  }
}

/** A binary min-heap of timed events. */
class Heap<T> {
  private readonly ts: number[] = [];
  private readonly vs: T[] = [];
  get size(): number {
    return this.ts.length;
  }
  push(t: number, v: T): void {
    const ts = this.ts;
    const vs = this.vs;
    let i = ts.length;
    ts.push(t);
    vs.push(v);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (ts[p]! <= t) break;
      ts[i] = ts[p]!;
      vs[i] = vs[p]!;
      i = p;
    }
    ts[i] = t;
    vs[i] = v;
  }
  pop(): [number, T] {
    const ts = this.ts;
    const vs = this.vs;
    const t0 = ts[0]!;
    const v0 = vs[0]!;
    const t = ts.pop()!;
    const v = vs.pop()!;
    const n = ts.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && ts[r]! < ts[l]! ? r : l;
        if (ts[c]! >= t) break;
        ts[i] = ts[c]!;
        vs[i] = vs[c]!;
        i = c;
      }
      ts[i] = t;
      vs[i] = v;
    }
    return [t0, v0];
  }
}

type Ev =
  | { k: 'ready'; w: number }
  | { k: 'pull'; w: number; b: Batch }
  | { k: 'pulled'; w: number; b: Batch }
  | { k: 'computed'; w: number; b: Batch }
  | { k: 'pushed'; w: number; b: Batch }
  | { k: 'tick'; s: number }
  | { k: 'flush'; w: number; gen: number }
  | { k: 'flushed'; w: number; examples: number };

interface Batch {
  size: number;
  /** When it started (µs). */
  startT: number;
  /** Time of its oldest event (µs). */
  eventT: number;
  /** Freed its slot when its push was sent (overlapPush). */
  early?: boolean;
  shards: number[];
  rowsPerShard: number;
}

/** Unique rows in E examples (the data's Heaps'-law fit; linear below one example). */
export function uniqueRows(costs: MeasuredCosts, examples: number): number {
  if (examples <= 0) return 0;
  const d = costs.rows.a * Math.pow(examples, costs.rows.b);
  return Math.min(d, examples * costs.rows.a);
}

/** Seeded PRNG so every run of the model gives the same numbers. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

/**
 * Simulates `simMs` of the cluster at `offered` examples/s (open loop, spread evenly over the
 * workers). Stable means: it kept up (≥ 95% of the offered rate acked after warm-up) and no
 * resource ended with more than max(50 ms, two batch latencies) of queued work.
 */
export function simulate(
  costs: MeasuredCosts,
  layout: SimLayout,
  offered: number,
  knobs: SimKnobs = defaultKnobs,
  simMs = 1000,
): SimResult {
  const c = layout.coresPerMachine;
  const procs = Math.max(1, Math.min(c, knobs.workerProcsPerMachine ?? 1));
  const W = layout.workerMachines * procs;
  const perHost = knobs.shardPerHost === true;
  const hostsPerMachine = perHost ? Math.max(1, Math.min(c, knobs.hostsPerMachine ?? 1)) : 1;
  const S = perHost
    ? layout.shardMachines * hostsPerMachine
    : layout.shardMachines * (knobs.shardProcsPerMachine ?? c);
  // A host's threads: its share of the machine's cores, its own thread and the rest shard threads
  // (none on a single core: its shards then run on its own thread, nothing handed over).
  const hostCores = Math.max(1, Math.floor(c / hostsPerMachine));
  const hostThreads = hostCores - 1;
  const D = Math.max(1, Math.min(S, knobs.denseShards));
  const K = Math.max(1, layout.natsMachines);
  const R = Math.max(0, layout.servingMachines);
  const B = knobs.batch;
  const sync = knobs.denseSyncExamples ?? 0;
  const replica = sync > 0;
  const machineReplica = replica && knobs.denseReplicaPerMachine === true;
  /** Dense replicas in the cluster: one per worker process, or one per worker machine. */
  const replicas = machineReplica ? layout.workerMachines : W;
  const rnd = prng(42);
  // The local cluster: one pool of cores that every role's work also occupies (accounting only).
  const cpu = layout.sharedCores ? new Resource('machine cpu', layout.sharedCores, 1, true) : undefined;
  const all: Resource[] = cpu ? [cpu] : [];
  const res = (role: SimRole, name: string, lanes: number, speed = 1, fluid = false) => {
    const r = new Resource(name, lanes, speed, fluid);
    all.push(r);
    r.pool = cpu;
    r.scale = knobs.cpuScale?.[role] ?? 1;
    return r;
  };
  const workerMain = Array.from({ length: W }, (_, i) => res('worker', `worker-${i} main`, 1));
  const workerPool = Array.from({ length: W }, (_, i) =>
    res('worker', `worker-${i} compute`, Math.max(1, layout.computeThreads ?? Math.floor(c / procs) - 1)),
  );
  // A shard process's messages (receive, reply, bytes) and its row work: one lane for a process
  // per core. A host's threads all answer its messages (a queue group of its own thread and its
  // shard threads) and all do row work: one resource of that many threads, fluid within it.
  const shards = Array.from({ length: S }, (_, i) =>
    perHost ? res('shard', `shard-host-${i} threads`, 1, hostCores) : res('shard', `shard-${i}`, 1),
  );
  // A host hears from every worker process of the cluster: waits drawn (Resource).
  if (perHost) for (const r of shards) r.sampleWait = rnd;
  const nats = Array.from({ length: K }, (_, i) =>
    res('nats', `nats-${i}`, 1, layout.sharedCores ?? c, true),
  );
  // Serving applies deltas on one thread per replica (the node's event loop). With sliced
  // serving a node holds the shards of one slice and receives only their deltas.
  const servingProcs = R * Math.max(1, knobs.servingProcsPerMachine ?? 1);
  // A shard host runs a shard per shard thread (one on its own thread without any).
  const shardsPerHost = perHost ? Math.max(1, hostThreads) : 1;
  const slices = knobs.servingNodesPerSlice
    ? Math.max(
        1,
        Math.min(
          S * shardsPerHost,
          knobs.servingMaxSlices ?? Infinity,
          Math.floor(servingProcs / knobs.servingNodesPerSlice),
        ),
      )
    : 1;
  const serving = res('serving', slices > 1 ? 'serving node (one slice)' : 'serving replica', 1);
  // Slices are by shard (s % slices), not by host: a host's shards fall in up to shardsPerHost
  // slices, and it sends each slice its part of a tick in a message of its own. The slice the
  // representative node holds has a shard on a host with probability `hostInSlice`; a delta
  // then brings it 1 / (slices · hostInSlice) of the host's rows. Shard processes (no hosts)
  // publish each on its own subject: shard s reaches slice s % slices only.
  const hostInSlice = perHost ? 1 - Math.pow(1 - 1 / slices, shardsPerHost) : 1 / slices;
  /** A host's messages per tick: the slices its shards fall in (1 unsliced or per shard). */
  const hostGroups = perHost ? Math.max(1, Math.round(slices * hostInSlice)) : 1;
  const servesShard = (s: number) => perHost || s % slices === 0;
  // Every serving process of a slice applies what the representative one does.
  serving.copies = Math.max(1, servingProcs);
  // The feedback publisher and bench cluster's tap: clients, charged only to a shared machine.
  const clients = res('clients', 'publisher and tap', 1, 1, true);
  const horizon = simMs * 1000;
  const warm = horizon * 0.3;
  const rowBytes = knobs.avgDim * 4 + 8;
  const halfRow = knobs.avgDim * 2 + 8;
  const int8Row = knobs.avgDim + 2 + 8;
  const pullRowBytes = knobs.int8Rows ? int8Row : knobs.halfPull ? halfRow : rowBytes;
  // + the row's count; − its key where the push names its pull
  const pushRowBytes =
    (knobs.int8Rows ? int8Row : knobs.halfPush ? halfRow : rowBytes) + 4 - (knobs.pullSessions ? 8 : 0);
  const deltaRowBytes = knobs.int8Rows ? int8Row : knobs.halfDeltas ? halfRow : rowBytes;
  const denseFloats = costs.denseFloats / D;
  const denseBytes = denseFloats * 4;
  const fbBytes = knobs.feedbackBytes ?? 0;
  const U = uniqueRows(costs, B);
  const expectedTouched = S * (1 - Math.pow(1 - 1 / S, U));
  const perWorker = offered / W;
  // A worker trains a batch when it is full or its oldest event waited maxWaitMs.
  const batchSize = Math.max(1, Math.min(B, Math.round((perWorker * knobs.maxWaitMs) / 1000)));
  const fill = (batchSize / perWorker) * 1e6;
  const Ub = uniqueRows(costs, batchSize);
  const touched = Math.max(1, Math.round(S * (1 - Math.pow(1 - 1 / S, Ub))));
  const rowsPerShard = Ub / touched;
  // A batch's share of a coalesced pull or push message, and its wait for the others: batches of
  // a worker machine arrive every fill / procs, and a coalesced one waits for k − 1 of them.
  const lingerUs = knobs.hostMsgsPerS ? Math.min(250_000, (2e6 * W) / knobs.hostMsgsPerS) : 0;
  const co = knobs.hostMsgsPerS ? 1 + lingerUs / fill : Math.max(1, knobs.coalesceBatches ?? 1);
  const ownBatches = knobs.coalesceWithinProcess === true || knobs.hostMsgsPerS !== undefined;
  const coShare = 1 / co;
  const coWait = co > 1 ? ((co - 1) / 2) * (ownBatches ? fill : fill / procs) : 0;
  const merged = knobs.mergeWindowParts === true && co > 1;

  let now = 0;
  let natsMsgs = 0;
  let natsBytes = 0;
  let servingBytes = 0;
  let servingMsgs = 0;
  let busBytes = 0;
  let denseBus = 0;
  const nodeIo = (bytes: number, share = 1) => costs.nodeMsgUs * share + (bytes * costs.nodeByteNs) / 1000;
  const natsIo = (bytes: number, share = 1) => costs.natsMsgUs * share + (bytes * costs.natsByteNs) / 1000;
  /**
   * One message from a process on server `from` to one on server `to`; `dense` of its bytes are
   * dense; `share` of a message (a coalesced batch's part of one).
   */
  const bus = (t: number, from: number, to: number, bytes: number, dense = 0, share = 1): number => {
    const us = natsIo(bytes, share);
    let end = nats[from]!.run(t + knobs.netUs, us);
    natsMsgs += share;
    natsBytes += bytes;
    if (now >= warm) {
      busBytes += bytes;
      denseBus += dense;
    }
    if (to !== from) end = nats[to]!.run(end + knobs.netUs, us);
    if (knobs.tap) {
      nats[from]!.run(end, us);
      clients.run(end, nodeIo(bytes, share));
    }
    return end + knobs.netUs;
  };
  const serverOfWorker = (w: number) => w % K;
  const serverOfShard = (s: number) => (s + W) % K;
  /**
   * A request served by shard `s`: message work, then row work (µs each). A host books both as one
   * job on its threads: two would each draw a queue wait.
   */
  const shardServe = (s: number, t: number, ioUs: number, workUs: number): number => {
    const r = shards[s]!;
    if (perHost) return r.run(t, ioUs + workUs);
    const io = r.run(t, ioUs);
    return workUs > 0 ? r.run(io, workUs) : io;
  };
  /**
   * A host's hand-offs for a message of `rows` rows (`share` of one): its parts over the T shard
   * threads touch P = T(1 − (1 − 1/T)^rows) of them. A host message reaches one of the T + 1
   * members of the host's queue group: its own thread (1 in T + 1: every part handed over) or a
   * shard thread, which serves its own part (P/T of one on average) itself, so P·T/(T + 1) parts
   * are handed over on average. A delta tick gathers every thread's part on the host's thread
   * (`gathered`): all P. Each costs the sender's copy and reply promise (`threadPartUs`) and the
   * receiver's unpacking and reply packing, charged as much: the probe's `threadPartRecvUs` is a
   * difference of two busy times, too noisy to charge (0–12 µs in five quiet runs against 3.7–8.7
   * for the sender), and a low reading must not make the model optimistic.
   */
  const touchedThreads = (rows: number) =>
    hostThreads * (1 - Math.pow(1 - 1 / hostThreads, Math.max(1, rows)));
  const handoffUs = (rows: number, share = 1, gathered = false): number => {
    if (!perHost || hostThreads === 0) return 0;
    const groups = touchedThreads(rows / share);
    // A process's coalesced batches each keep a part of their own per shard (host-messages.ts),
    // handed over in its thread's group: the parts beyond a group's first cost less.
    const extra = ownBatches && !merged ? Math.max(0, touchedThreads(rows) / share - groups) : 0;
    const handed = gathered ? 1 : hostThreads / (hostThreads + 1);
    const partUs = costs.threadPartUs ?? 0;
    return handed * share * 2 * (groups * partUs + extra * (costs.threadGroupPartUs ?? partUs));
  };

  /**
   * A batch's parts (requests) to one shard process or host of `rows` of its rows: one per shard
   * thread touched on a threaded host. Merged with the window's other batches (`coShare` each),
   * its share of the window's parts.
   */
  const partsPerShard = (r: number) => (perHost && hostThreads > 0 ? touchedThreads(r) : 1);
  const partsOf = (rows: number): number =>
    merged ? partsPerShard(rows / coShare) * coShare : partsPerShard(rows);
  /** The worker's parts for a batch's `rows` on one shard process or host. */
  const workerPartsOf = (rows: number): number =>
    knobs.hostParts && perHost ? (merged ? coShare : 1) : partsOf(rows);
  const workerPartUs = (op: 'pull' | 'push') =>
    (op === 'pull' ? costs.workerPullPartUs : costs.workerPushPartUs) ?? 0;
  const shardPartUs = (op: 'pull' | 'push') =>
    (op === 'pull' ? costs.shardPullPartUs : costs.shardPushPartUs) ?? 0;

  const heap = new Heap<Ev>();
  const inFlight = new Int32Array(W);
  const pushing = new Int32Array(W);
  const waiting: Batch[][] = Array.from({ length: W }, () => []);
  // Per shard, since its last delta: rows pushed, oldest event times, dense touched.
  const pendRows = new Float64Array(S);
  const pendExamples = new Float64Array(S);
  const pendEvents: number[][] = Array.from({ length: S }, () => []);
  const pendDense = new Uint8Array(S);
  // Per worker (dense replica): batches applied locally and not yet flushed, flush state.
  const unflushed: Batch[][] = Array.from({ length: W }, () => []);
  const unflushedEx = new Float64Array(W);
  const flushing = new Uint8Array(W);
  const flushQueued = new Uint8Array(W);
  const flushGen = new Int32Array(W);
  let flushes = 0;
  let flushedExamples = 0;
  let acked = 0;
  let trained = 0;
  const fresh: number[] = [];

  const nextReady = (w: number, t: number) => heap.push(t + fill, { k: 'ready', w });
  for (let w = 0; w < W; w++) nextReady(w, rnd() * fill);
  // The shard's own interval, sized by the senders a serving node hears from (all of them unless
  // serving is sliced).
  const tickUs =
    deltaIntervalOf({
      shards: Math.max(1, Math.ceil(S * hostInSlice)),
      deltaIntervalMs: knobs.deltaIntervalMs,
      deltaMsgsPerServingNode: knobs.deltaMsgsPerServingNode,
      deltaMaxIntervalMs: knobs.deltaMaxIntervalMs ?? 250,
    }) * 1000;
  // Each shard ticks on its own phase; a tick is only scheduled while it has something to
  // publish (an idle shard's tick does nothing, and at 10k shard processes they dominate the run).
  const phase = Float64Array.from({ length: S }, () => rnd() * tickUs);
  const tickDue = new Uint8Array(S);
  const dirty = (s: number, t: number) => {
    if (tickDue[s]) return;
    tickDue[s] = 1;
    heap.push(phase[s]! + Math.max(0, Math.ceil((t - phase[s]!) / tickUs)) * tickUs, { k: 'tick', s });
  };

  const pickShards = (): number[] => {
    // Shards 0..D-1 hold the dense tensors: every batch touches them, unless workers replicate them.
    const need = replica ? 0 : D;
    const set = new Set<number>(Array.from({ length: need }, (_, i) => i));
    if (touched >= S) return Array.from({ length: S }, (_, i) => i);
    while (set.size < Math.max(touched, need)) set.add(Math.floor(rnd() * S));
    return [...set];
  };
  const start = (w: number, b: Batch, t: number) => {
    inFlight[w]!++;
    b.startT = t;
    const reqBytes = b.rowsPerShard * 8;
    const sent = workerMain[w]!.run(
      t,
      b.size * costs.encodeExampleUs +
        b.shards.length * (nodeIo(reqBytes, coShare) + workerPartsOf(b.rowsPerShard) * workerPartUs('pull')),
    );
    // A coalesced pull leaves once its machine's other batches joined it: an event then, not
    // work booked now for later, since a shard's queue serves in booking order and would make
    // everything arriving meanwhile wait behind it.
    if (coWait > 0) heap.push(sent + coWait, { k: 'pull', w, b });
    else pull(w, b, sent);
  };
  /** A batch's pull leaves the worker at `t`: one request per shard touched, answered. */
  const pull = (w: number, b: Batch, t: number) => {
    const reqBytes = b.rowsPerShard * 8;
    let done = t;
    for (const s of b.shards) {
      const arrive = bus(t, serverOfWorker(w), serverOfShard(s), reqBytes, 0, coShare);
      const dense = !replica && s < D ? denseBytes : 0;
      const repBytes = b.rowsPerShard * pullRowBytes + dense;
      const served = shardServe(
        s,
        arrive,
        2 * costs.nodeMsgUs * coShare +
          ((reqBytes + repBytes) * costs.nodeByteNs) / 1000 +
          handoffUs(b.rowsPerShard, coShare),
        b.rowsPerShard * costs.pullRowUs + partsOf(b.rowsPerShard) * shardPartUs('pull'),
      );
      done = Math.max(done, bus(served, serverOfShard(s), serverOfWorker(w), repBytes, dense, coShare));
    }
    heap.push(done, { k: 'pulled', w, b });
  };
  // Acks to JetStream: in jsConsumeUs when the feedback path is charged, else ~2 µs each.
  const acks = (w: number, t: number, examples: number) =>
    workerMain[w]!.run(t, fbBytes > 0 ? 0 : examples * 2);
  /** A dense replica's flush: one additive push per dense shard, then the pull that rebases. */
  const flush = (w: number, t: number) => {
    const batches = unflushed[w]!;
    const examples = unflushedEx[w]!;
    unflushed[w] = [];
    unflushedEx[w] = 0;
    flushGen[w]!++;
    flushing[w] = 1;
    flushQueued[w] = 0;
    if (t >= warm) {
      flushes++;
      flushedExamples += examples;
    }
    // w − base: one pass over the tensor, then one message per dense shard.
    const sent = workerMain[w]!.run(t, costs.denseFloats * 0.001 + D * nodeIo(denseBytes));
    let done = sent;
    for (let s = 0; s < D; s++) {
      const arrive = bus(sent, serverOfWorker(w), serverOfShard(s), denseBytes, denseBytes);
      const added = shardServe(
        s,
        arrive,
        2 * costs.nodeMsgUs + (denseBytes * costs.nodeByteNs) / 1000 + handoffUs(1),
        (denseFloats * costs.denseAddFloatNs) / 1000 + shardPartUs('push'),
      );
      pendDense[s] = 1;
      dirty(s, t);
      // An event is fresh when its dense change, the later of its two paths, reaches serving.
      const pe = pendEvents[s]!;
      for (const b of batches) if (pe.length < 1024) pe.push(b.eventT);
      const replied = bus(added, serverOfShard(s), serverOfWorker(w), 64);
      // A lone replica's flush finds its own previous change as the tensor's last one: the
      // worker skips the pull-back (dense-replica.ts); with others flushing too it pulls.
      if (replicas === 1) {
        done = Math.max(done, replied);
        continue;
      }
      const pulled = shardServe(
        s,
        bus(replied, serverOfWorker(w), serverOfShard(s), 64),
        2 * costs.nodeMsgUs + (denseBytes * costs.nodeByteNs) / 1000,
        0,
      );
      done = Math.max(done, bus(pulled, serverOfShard(s), serverOfWorker(w), denseBytes, denseBytes));
    }
    heap.push(done, { k: 'flushed', w, examples });
  };
  const requestFlush = (w: number, t: number) => {
    if (flushing[w]) flushQueued[w] = 1;
    else flush(w, t);
  };

  let overloaded = false;
  let warmed = false;
  const batchMs: number[] = [];
  while (heap.size > 0 && !overloaded) {
    const [t, ev] = heap.pop();
    if (t > horizon) break;
    now = t;
    if (!warmed && t >= warm) {
      warmed = true;
      for (const r of all) r.busyAtWarm = r.busy;
    }
    switch (ev.k) {
      case 'ready': {
        const b: Batch = { size: batchSize, startT: t, eventT: t - fill, shards: pickShards(), rowsPerShard };
        // The batch's feedback events: published by a client, stored, delivered and acked by the
        // server, fetched and acked by the worker's main thread while they arrive (off the
        // batch's critical path when an earlier batch holds the slot).
        if (fbBytes > 0) {
          // A backlog was stored before the clock: only its delivery and acks are in the window.
          const serverUs = knobs.prepublished
            ? (costs.jsServerDeliverUs ?? costs.jsServerUs)
            : costs.jsServerUs;
          nats[serverOfWorker(ev.w)]!.run(t, b.size * serverUs);
          if (!knobs.prepublished) clients.run(t, b.size * (costs.jsPublishUs + (knobs.eventDeflateUs ?? 0)));
          workerMain[ev.w]!.run(t, b.size * (costs.jsConsumeUs + (knobs.eventInflateUs ?? 0)));
          natsMsgs += 2 * b.size;
          natsBytes += 2 * b.size * fbBytes;
          if (now >= warm) busBytes += b.size * fbBytes;
        }
        if (knobs.clientsUsPerExample) clients.run(t, b.size * knobs.clientsUsPerExample);
        if (inFlight[ev.w]! < knobs.inFlightBatches) start(ev.w, b, t);
        else waiting[ev.w]!.push(b);
        // Far behind the offered rate: no need to simulate the rest of an overload.
        if (waiting[ev.w]!.length > 64) overloaded = true;
        nextReady(ev.w, t);
        break;
      }
      case 'pull':
        pull(ev.w, ev.b, t);
        break;
      case 'pulled': {
        const b = ev.b;
        // A pull that waited a second: some shard's queue is far past the stability bound.
        if (t - b.startT > 1e6) overloaded = true;
        const recv = workerMain[ev.w]!.run(
          t,
          b.shards.length * nodeIo(b.rowsPerShard * pullRowBytes, coShare) +
            (replica ? 0 : (D * denseBytes * costs.nodeByteNs) / 1000),
        );
        const computed = workerPool[ev.w]!.run(recv, b.size * costs.computeExampleUs);
        heap.push(computed, { k: 'computed', w: ev.w, b });
        break;
      }
      case 'computed': {
        const b = ev.b;
        const pushBytes = b.rowsPerShard * pushRowBytes;
        const sent = workerMain[ev.w]!.run(
          t,
          b.shards.length *
            (nodeIo(pushBytes, coShare) + workerPartsOf(b.rowsPerShard) * workerPartUs('push')) +
            (replica
              ? (costs.denseFloats * costs.denseApplyFloatNs) / 1000
              : (D * denseBytes * costs.nodeByteNs) / 1000),
        );
        let done = sent;
        for (const s of b.shards) {
          const dense = !replica && s < D ? denseBytes : 0;
          const bytes = pushBytes + dense;
          const arrive = bus(sent, serverOfWorker(ev.w), serverOfShard(s), bytes, dense, coShare);
          const applied = shardServe(
            s,
            arrive,
            2 * costs.nodeMsgUs * coShare +
              (bytes * costs.nodeByteNs) / 1000 +
              handoffUs(b.rowsPerShard, coShare),
            (b.rowsPerShard + (dense > 0 ? denseFloats / 16 : 0)) * costs.applyRowUs +
              partsOf(b.rowsPerShard) * shardPartUs('push'),
          );
          pendRows[s]! += b.rowsPerShard;
          pendExamples[s]! += b.size;
          if (dense > 0) pendDense[s] = 1;
          dirty(s, t);
          const pe = pendEvents[s]!;
          if (!replica && pe.length < 1024) pe.push(b.eventT);
          done = Math.max(done, bus(applied, serverOfShard(s), serverOfWorker(ev.w), 64, 0, coShare));
        }
        if (knobs.overlapPush && pushing[ev.w]! < knobs.inFlightBatches) {
          pushing[ev.w]!++;
          b.early = true;
          inFlight[ev.w]!--;
          const next = waiting[ev.w]!.shift();
          if (next) start(ev.w, next, sent);
        }
        heap.push(done, { k: 'pushed', w: ev.w, b });
        break;
      }
      case 'pushed': {
        const w = ev.w;
        if (ev.b.early) pushing[w]!--;
        else inFlight[w]!--;
        trained += ev.b.size;
        if (t >= warm) {
          acked += ev.b.size;
          batchMs.push((t - ev.b.startT) / 1000);
        }
        if (!replica) acks(w, t, ev.b.size);
        else {
          // Acked only once the flush carrying its dense change was accepted. With one replica
          // per machine the processes add into it (shared memory) and its first process flushes.
          const o = machineReplica ? w - (w % procs) : w;
          if (unflushed[o]!.length === 0)
            heap.push(t + (knobs.denseMaxDelayMs ?? 1000) * 1000, { k: 'flush', w: o, gen: flushGen[o]! });
          unflushed[o]!.push(ev.b);
          unflushedEx[o]! += ev.b.size;
          if (unflushedEx[o]! >= sync) requestFlush(o, t);
        }
        const next = ev.b.early ? undefined : waiting[w]!.shift();
        if (next) start(w, next, t);
        break;
      }
      case 'flush': {
        if (ev.gen === flushGen[ev.w] && unflushedEx[ev.w]! > 0) requestFlush(ev.w, t);
        break;
      }
      case 'flushed': {
        const w = ev.w;
        // The pulled tensors in, rebased (w ← shard + (w − base)), and the covered batches acked.
        if (replicas > 1) workerMain[w]!.run(t, D * nodeIo(denseBytes) + costs.denseFloats * 0.002);
        acks(w, t, ev.examples);
        flushing[w] = 0;
        if (flushQueued[w] || unflushedEx[w]! >= sync) flush(w, t);
        break;
      }
      case 'tick': {
        const s = ev.s;
        tickDue[s] = 0;
        if (pendRows[s]! === 0 && !pendDense[s]) break;
        // Rows changed since the last delta, coalesced: a key pushed by several batches in the
        // window is sent once (the unique rows of the examples pushed here, keys spread evenly).
        const rows = Math.min(pendRows[s]!, uniqueRows(costs, pendExamples[s]!) / S);
        const denseRows = pendDense[s] ? denseFloats : 0;
        const bytes = rows * deltaRowBytes + denseRows * 4 + 64;
        // (a host's shard threads hand their deltas to its own thread, which sends them as one message)
        const taken = shardServe(
          s,
          t,
          costs.nodeMsgUs * hostGroups + (bytes * costs.nodeByteNs) / 1000 + handoffUs(rows, 1, true),
          rows * costs.deltaRowUs + (denseRows / 16) * costs.deltaRowUs,
        );
        // A host sliced per serving slice sends `hostGroups` messages, each its slice's share.
        const g = hostGroups;
        const part = (bytes - 64) / g + 64;
        let delivered = bus(taken, serverOfShard(s), serverOfShard(s), part, (denseRows * 4) / g);
        for (let k = 1; k < g; k++) bus(taken, serverOfShard(s), serverOfShard(s), part, (denseRows * 4) / g);
        // Fan-out: one copy per serving process holding the slice, delivered by the server it is
        // connected to. Serving processes spread over the servers, a slice's holders on
        // consecutive ones (slice after slice), so no server delivers every slice's deltas; the
        // shard's server forwards one copy to each other server with holders (a route).
        const holders = Math.ceil(servingProcs / slices);
        const origin = serverOfShard(s);
        const copies = Math.ceil(holders / K);
        for (let j = 0; j < g && R > 0; j++) {
          const first = ((s + j) % slices) * holders;
          for (let k = 0; k < Math.min(K, holders); k++) {
            const server = (first + k) % K;
            if (server !== origin) nats[origin]!.run(taken, natsIo(part));
            nats[server]!.run(taken, copies * natsIo(part));
          }
        }
        natsMsgs += holders * g;
        natsBytes += holders * g * part;
        if (R > 0 && servesShard(s)) {
          // A host's message reaches the representative node when one of its shards is in its
          // slice (fluid: that share of a message, 1/slices of the rows); a shard process's whole.
          const share = perHost ? hostInSlice : 1;
          const sliceRows = perHost ? rows / slices : rows;
          const got = perHost ? share * 64 + (bytes - 64 - denseRows * 4) / slices + denseRows * 4 : bytes;
          servingBytes += got;
          servingMsgs += share;
          // A dense row is one copy of the tensor (~1 ns per float), not per-row upserts; every
          // slice follows the dense tensors' owners whole.
          delivered = serving.run(
            delivered,
            share * costs.nodeMsgUs +
              (got * costs.nodeByteNs) / 1000 +
              sliceRows * costs.servingRowUs +
              denseRows * 0.001,
          );
          // Serving 250 ms behind (5× the stability bound) does not recover at a steady rate.
          if (delivered - t > 250_000) overloaded = true;
          if (t >= warm) for (const et of pendEvents[s]!) fresh.push((delivered - et) / 1000);
        }
        pendRows[s] = 0;
        pendExamples[s] = 0;
        pendDense[s] = 0;
        pendEvents[s] = [];
        break;
      }
    }
  }
  const span = Math.max(1, now);
  const roles: Record<string, Resource[]> = {
    worker_main: workerMain,
    worker_compute: workerPool,
    shard: shards,
    nats,
    serving: R > 0 ? [serving] : [],
    ...(cpu ? { machine_cpu: [cpu] } : {}),
  };
  const utilisation: Record<string, number> = {};
  let bottleneck = '';
  let worst = -1;
  let maxBacklog = 0;
  for (const [role, rs] of Object.entries(roles)) {
    let u = 0;
    for (const r of rs) {
      const x = r.utilisation(span, warm);
      if (x > u) u = x;
      if (x > worst) {
        worst = x;
        bottleneck = r.name;
      }
      maxBacklog = Math.max(maxBacklog, r.backlog(now));
    }
    utilisation[role] = Math.round(u * 1000) / 1000;
  }
  const throughput = overloaded ? 0 : acked / (Math.max(1, span - warm) / 1e6);
  batchMs.sort((a, b) => a - b);
  const batchP50Ms = batchMs.length ? Math.round(batchMs[batchMs.length >> 1]! * 10) / 10 : null;
  // Nothing near saturation but the rate is not met: each worker's in-flight batches wait on
  // their slowest shard (Little's law: throughput ≤ workers × inFlight × batch / latency).
  if (!overloaded && worst < 0.85)
    bottleneck = `latency: ${knobs.inFlightBatches} batches in flight per worker`;
  fresh.sort((a, b) => a - b);
  const q = (p: number) =>
    fresh.length ? Math.round(fresh[Math.floor(p * (fresh.length - 1))]! * 10) / 10 : null;
  const secs = span / 1e6;
  const perEx = (x: number) => (acked > 0 ? Math.round(x / acked) : 0);
  const cpuOf = (rs: Resource[]) =>
    trained > 0 ? Math.round((rs.reduce((a, r) => a + r.cpu, 0) / trained) * 10) / 10 : 0;
  return {
    offered: Math.round(offered),
    throughput: Math.round(throughput),
    stable:
      !overloaded &&
      throughput >= 0.95 * offered &&
      // Queued work at the end: a snapshot, so the bound allows two batches' worth where
      // batches are long (one worker's 256-example batch on a loaded local machine).
      maxBacklog < Math.max(50_000, 2000 * (batchP50Ms ?? 0)) &&
      (utilisation.nats ?? 0) < 1 &&
      (utilisation.shard ?? 0) < 1 &&
      (utilisation.machine_cpu ?? 0) < 1,
    freshnessP50Ms: q(0.5),
    freshnessP99Ms: q(0.99),
    utilisation,
    bottleneck,
    natsMsgsPerS: Math.round(natsMsgs / secs),
    natsBytesPerS: Math.round(natsBytes / secs),
    servingBytesPerS: Math.round(servingBytes / secs),
    servingMsgsPerS: Math.round(servingMsgs / secs),
    shardsTouchedPerBatch: Math.round(expectedTouched),
    batchP50Ms,
    busBytesPerExample: perEx(busBytes),
    denseBytesPerExample: perEx(denseBus),
    examplesPerBatch: batchSize,
    batchesPerMessage: Math.round(co * 100) / 100,
    workerPartsPerBatch: Math.round(touched * workerPartsOf(rowsPerShard) * 10) / 10,
    shardPartsPerBatch: Math.round(touched * partsOf(rowsPerShard) * 10) / 10,
    examplesPerFlush: flushes > 0 ? Math.round(flushedExamples / flushes) : null,
    cpuUsPerExample: {
      worker: cpuOf([...workerMain, ...workerPool]),
      shard: cpuOf(shards),
      serving: cpuOf([serving]),
      nats: cpuOf(nats),
      clients: cpuOf([clients]),
    },
  };
}

/** The highest offered rate the layout sustains (bisection on {@link simulate}), with its run. */
export function maxSustainable(
  costs: MeasuredCosts,
  layout: SimLayout,
  knobs: SimKnobs = defaultKnobs,
  opts: { hi?: number; steps?: number; simMs?: number; probeAbove?: number } = {},
): SimResult {
  let lo = 0;
  let hi = opts.hi ?? 2e3 * (layout.workerMachines + 1);
  let best: SimResult | undefined;
  let failed: SimResult | undefined;
  // Grow hi until unstable, then bisect. A large cluster can be unstable at a low rate and
  // stable above it (fixed costs per worker, e.g. a replica's timed flushes, against batches of
  // a few examples): when the first rate fails, a few higher ones are tried before bisecting down.
  let probeUp = 4;
  // Past a stable rate, a big cluster can also fail at one rate and hold at a higher one (timed
  // batches fill up, which makes each example cheaper): `probeAbove` rates 1.5× the failed one
  // are tried before bisecting.
  let probeAbove = opts.probeAbove ?? 0;
  for (let i = 0; i < 12; i++) {
    const r = simulate(costs, layout, hi, knobs, opts.simMs);
    if (!r.stable) {
      failed ??= r;
      if (best === undefined && probeUp-- > 0) {
        hi *= 2;
        continue;
      }
      if (best === undefined) hi /= 2 ** 4;
      else if (probeAbove-- > 0) {
        const above = simulate(costs, layout, hi * 1.5, knobs, opts.simMs);
        if (above.stable) {
          best = above;
          failed = undefined;
          lo = hi * 1.5;
          hi *= 3;
          continue;
        }
      }
      break;
    }
    best = r;
    failed = undefined;
    lo = hi;
    hi *= 2;
  }
  for (let i = 0; i < (opts.steps ?? 9); i++) {
    const mid = (lo + hi) / 2;
    const r = simulate(costs, layout, mid, knobs, opts.simMs);
    if (r.stable) {
      lo = mid;
      best = r;
    } else {
      hi = mid;
      failed = r;
    }
  }
  // Nothing sustainable: report the lowest rate tried, with what saturated there.
  return best ?? { ...failed!, throughput: 0, stable: false };
}
