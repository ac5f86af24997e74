import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { ensureStream } from '@freshet/client';
import { createModel, type ModelConfigInput } from '@freshet/model';
import {
  decodeHostReply,
  decodeHostRequest,
  decodePush,
  decodePushReply,
  shardOfDense,
  shardStatusSubject,
  subjects,
  type ShardStatus,
} from '@freshet/protocol';
import { parseReadyLine } from '@freshet/nats';
import { afterAll } from 'vitest';
import {
  publishExamples as publishLabelled,
  spawnChild,
  waitFor,
  type ChildHandle,
  type NatsFixture,
} from '@freshet/testkit';

type NatsConnection = NatsFixture['nc'];

/** Shared pieces of the fault tests: role processes, a push ledger on the bus, a countable load. */

export const repoRoot = fileURLToPath(new URL('..', import.meta.url));

/**
 * A logistic-regression model with plain SGD: every batch's push to the shard that owns the
 * dense `lin` table carries the batch's example count, so the examples applied are countable.
 */
export const faultModel: ModelConfigInput = {
  name: 'faults',
  kind: 'lr',
  features: {
    fields: [
      { kind: 'categorical', name: 'user' },
      { kind: 'categorical', name: 'item' },
    ],
  },
  optimizer: { kind: 'sgd', lr: 0.05 },
};
export const faultSpec = createModel(faultModel).spec;
const denseTable = faultSpec.tables.findIndex((t) => t.kind === 'dense');

/** The shard that owns the dense table (and so sees every batch's example count). */
export function denseShard(shards: number): number {
  return shardOfDense(faultSpec.tables[denseTable]!, shards);
}

export type Role = 'shard' | 'worker' | 'serving' | 'shard-host';

/** A role process: `node packages/<role>/dist/bin.js --options-json ...`, killed after the file. */
export interface RoleProcess {
  handle: ChildHandle;
  options: Record<string, unknown>;
  /** The parsed ready line. */
  ready: Record<string, unknown>;
}

const started = new Set<ChildHandle>();

/**
 * Stops every role process this file started after its tests, failed or not (call it in the
 * describe body: a hook registered from inside a running test is not guaranteed to run).
 */
export function useRoleProcesses(): void {
  afterAll(async () => {
    await Promise.all([...started].map((h) => h.stop(2000)));
    started.clear();
  });
}

export async function startRole(
  role: Role,
  options: Record<string, unknown>,
  /** more arguments after the options (e.g. `--metrics-port 0`) */
  args: string[] = [],
): Promise<RoleProcess> {
  // a shard host has no bin of its own: it is the CLI's `freshet shard-host`
  const entry =
    role === 'shard-host'
      ? [join(repoRoot, 'packages', 'cli', 'dist', 'main.js'), 'shard-host']
      : [join(repoRoot, 'packages', role, 'dist', 'bin.js')];
  const handle = spawnChild(
    process.execPath,
    [...entry, '--options-json', JSON.stringify(options), ...args],
    {
      cwd: repoRoot,
    },
  );
  started.add(handle);
  const ready = await waitFor(
    () => {
      if (handle.child.exitCode !== null) throw new Error(`${role} exited: ${handle.output().slice(-2000)}`);
      return parseReadyLine(handle.output()) ?? null;
    },
    { timeoutMs: 30_000, message: () => `${role} ready: ${handle.output().slice(-2000)}` },
  );
  return { handle, options, ready };
}

/** kill -9, then wait for the exit. */
export async function kill9(p: RoleProcess): Promise<void> {
  p.handle.child.kill('SIGKILL');
  await p.handle.exited;
}

/** Creates the feedback stream and publishes the model spec where shards look for it. */
export async function prepareCluster(
  nc: NatsConnection,
  cluster: string,
  partitions: number,
  replicas = 1,
): Promise<void> {
  await ensureStream(nc, { cluster, partitions, replicas });
}

/**
 * Watches every push request and its reply on the bus. A push id counts once however many
 * times it was sent or answered (`duplicate` replies included): the sum of the dense counts of
 * distinct accepted ids is the number of examples the shards applied. An example applied under
 * two ids (re-batched after a crash) or never accepted shows as a difference from what was published.
 */
export class PushLedger {
  /** Reply subject → the push (a host message's: its parts, in order). */
  private readonly sent = new Map<
    string,
    { host: boolean; parts: { shard: number; id: string; dense: number }[] }
  >();
  /** Reply subject → the reply's bytes. */
  private readonly replies = new Map<string, Uint8Array>();
  /** `${shard}|${id}` → dense example count, for ids a shard accepted. */
  readonly accepted = new Map<string, number>();
  requests = 0;
  /** Host messages among them (several shards' pushes to one shard host in one message). */
  hostMessages = 0;
  /** Duplicate replies to a re-push whose example count differs from the applied push's. */
  partialDuplicates = 0;
  /**
   * What the tap's connection went through (disconnects, slow-consumer errors): a tap that lost
   * messages undercounts, which must not be mistaken for lost examples.
   */
  readonly tapEvents: string[] = [];

  /** Batch manifests seen put on the KV bucket: batch id → its events' stream sequences and writer. */
  private readonly manifests = new Map<string, { seqs: number[]; worker: string }>();

  private constructor(private readonly nc: NatsConnection) {}

  /** `table`: the dense table whose counts are summed (default: the fault model's). */
  static start(nc: NatsConnection, cluster: string, table = denseTable): PushLedger {
    const l = new PushLedger(nc);
    void (async () => {
      for await (const st of nc.status()) {
        const type = String(st.type);
        if (type !== 'pingTimer') l.tapEvents.push(`${type}${st.data ? ` ${JSON.stringify(st.data)}` : ''}`);
      }
    })();
    const s = subjects(cluster);
    const densePart = (data: Uint8Array, shard: number) => {
      const req = decodePush(data);
      let dense = 0;
      for (const t of req.tables) if (t.t === table) dense += t.counts[0] ?? 0;
      return { shard, id: req.id, dense };
    };
    nc.subscribe(`${s.prefix}.ps.*.push`, {
      callback: (err: unknown, m: { subject: string; data: Uint8Array; reply?: string }) => {
        if (err || !m.reply) return;
        l.requests++;
        l.sent.set(m.reply, { host: false, parts: [densePart(m.data, Number(m.subject.split('.').at(-2)))] });
        l.match(m.reply);
      },
    });
    // a shard host's pushes for several of its shards in one message (worker hostRouting)
    nc.subscribe(`${s.prefix}.psh.*.push`, {
      callback: (err: unknown, m: { subject: string; data: Uint8Array; reply?: string }) => {
        if (err || !m.reply) return;
        const parts = decodeHostRequest(m.data).parts.map((p) => densePart(p.frame, p.shard));
        l.requests += parts.length;
        l.hostMessages++;
        l.sent.set(m.reply, { host: true, parts });
        l.match(m.reply);
      },
    });
    // push replies go to the workers' own inboxes (`_INBOX_<cluster>_worker.`)
    nc.subscribe(`${s.inboxPrefix('worker')}.>`, {
      callback: (err: unknown, m: { subject: string; data: Uint8Array; reply?: string }) => {
        if (err) return;
        // pull replies pass here too: kept only while small (push replies are) or expected
        if (m.data.length > 4096 && !l.sent.has(m.subject)) return;
        l.replies.set(m.subject, m.data.slice());
        l.match(m.subject);
      },
    });
    // every manifest put (a batch about to be pushed, or a copy of one), for where a lost event went
    nc.subscribe(`$KV.${s.kvBucket}.mf.>`, {
      callback: (err: unknown, m: { data: Uint8Array }) => {
        if (err || m.data.length === 0) return;
        try {
          const mf = JSON.parse(new TextDecoder().decode(m.data)) as {
            id: string;
            worker: string;
            ex: Array<{ s: number[] }>;
          };
          const seqs = mf.ex.flatMap((e) => e.s);
          const had = l.manifests.get(mf.id);
          if (!had || had.seqs.length < seqs.length) l.manifests.set(mf.id, { seqs, worker: mf.worker });
        } catch {
          // not a manifest
        }
      },
    });
    return l;
  }

  /**
   * Where the events `first..last` whose examples never reached `shard` in an accepted push went,
   * by the manifests seen: for a drain that comes up short, the first few such sequences and,
   * for each, the batches (manifest id, writer, shards that accepted it) that held it.
   */
  lost(shard: number, first: number, last: number, max = 8): string {
    // per-shard push ids are `<batch id>.s<shard>`
    const shardsOf = new Map<string, string[]>();
    for (const k of this.accepted.keys()) {
      const [sh, id] = k.split('|') as [string, string];
      const batch = id.replace(/\.s\d+$/, '');
      shardsOf.set(batch, [...(shardsOf.get(batch) ?? []), sh]);
    }
    const acceptedOn = (id: string) => shardsOf.get(id) ?? [];
    const covered = new Set<number>();
    const bySeq = new Map<number, string[]>();
    for (const [id, mf] of this.manifests) {
      const on = acceptedOn(id);
      for (const q of mf.seqs) {
        if (on.includes(String(shard))) covered.add(q);
        let l = bySeq.get(q);
        if (!l) bySeq.set(q, (l = []));
        l.push(`${id} by ${mf.worker} accepted on [${on.join(',')}]`);
      }
    }
    const missing: number[] = [];
    for (let q = first; q <= last; q++) if (!covered.has(q)) missing.push(q);
    const shown = missing.slice(0, max).map((q) => `${q}: ${bySeq.get(q)?.join('; ') ?? 'in no manifest'}`);
    return `${missing.length} of seqs ${first}..${last} in no batch accepted on shard ${shard} (${this.manifests.size} manifests seen)${shown.length ? `: ${shown.join(' | ')}` : ''}`;
  }

  private match(reply: string): void {
    const req = this.sent.get(reply);
    const data = this.replies.get(reply);
    if (!req || data === undefined) return;
    this.sent.delete(reply);
    this.replies.delete(reply);
    let frames: (Uint8Array | undefined)[];
    try {
      frames = req.host ? decodeHostReply(data, req.parts.length) : [data];
    } catch {
      return; // the host failed the whole message: no part was answered
    }
    req.parts.forEach((part, i) => {
      const f = frames[i];
      if (!f) return; // not on that host: the worker sends it to the shard, which this sees again
      let duplicate: boolean;
      try {
        duplicate = decodePushReply(f).duplicate;
      } catch {
        return; // an error reply
      }
      const key = `${part.shard}|${part.id}`;
      // A duplicate re-push may carry part of the batch only (a recovered manifest whose other
      // partitions' copies were already deleted): the count is the applied push's, never the re-push's.
      // A duplicate of a push this tap never saw answered (a shard that died before replying,
      // then replayed its log) still counts: that push was applied.
      const had = this.accepted.get(key);
      if (duplicate && had !== undefined && part.dense !== had) this.partialDuplicates++;
      if (!duplicate || had === undefined) this.accepted.set(key, part.dense);
    });
  }

  /** Examples applied through the dense table: each distinct accepted push id once. */
  examples(): number {
    let n = 0;
    for (const v of this.accepted.values()) n += v;
    return n;
  }

  /** Distinct push ids a shard accepted. */
  acceptedBy(shard: number): number {
    let n = 0;
    for (const k of this.accepted.keys()) if (k.startsWith(`${shard}|`)) n++;
    return n;
  }
}

/**
 * Publishes `n` pre-labelled events, user `u<k>` (so every user's rows are touched by few
 * events), with JetStream message ids; acks awaited in windows of 256.
 */
export function publishExamples(
  nc: NatsConnection,
  cluster: string,
  from: number,
  n: number,
  partitions: number,
) {
  return publishLabelled(nc, cluster, from, n, partitions, {
    label: (k) => (k % 4 === 0 ? 1 : 0),
    features: (k, user) => ({ user, item: `i${k % 50}` }),
    msgId: true,
  });
}

export { outstanding, setAckWait as shortenAckWait } from '@freshet/testkit';

/** A shard's status over request-reply. */
export async function shardStatus(nc: NatsConnection, cluster: string, shard: number): Promise<ShardStatus> {
  const r = await nc.request(shardStatusSubject(cluster, shard), new Uint8Array(), { timeout: 3000 });
  return JSON.parse(new TextDecoder().decode(r.data)) as ShardStatus;
}

/** A worker's status over its status endpoint. */
export async function workerStatus(
  nc: NatsConnection,
  cluster: string,
  id: string,
): Promise<Record<string, unknown>> {
  const s = subjects(cluster);
  const r = await nc.request(`${s.prefix}.worker.${id}.status`, new Uint8Array(), { timeout: 3000 });
  return JSON.parse(new TextDecoder().decode(r.data)) as Record<string, unknown>;
}

/** Options of a shard process of the fault cluster. */
export function shardOptions(
  cluster: string,
  shard: number,
  shards: number,
  servers: string | string[],
  dataDir: string,
) {
  return { cluster, shard, shards, nats: { servers }, model: faultSpec, dataDir };
}

/** Options of a worker process of the fault cluster (short leases so takeovers are quick). */
export function workerOptions(
  cluster: string,
  id: string,
  shards: number,
  partitions: number,
  servers: string | string[],
  extra: Record<string, unknown> = {},
) {
  return {
    cluster,
    id,
    nats: { servers },
    model: faultModel,
    shards,
    partitions,
    batch: { size: 64, maxWaitMs: 20 },
    compute: { threads: 1 },
    retry: { attempts: 1000, baseMs: 20, maxMs: 250 },
    lease: { heartbeatMs: 200, ttlMs: 1500 },
    consumer: { nakDelayMs: 100 },
    ...extra,
  };
}

/** Scores of `pairs` (one candidate each) from a serving node's HTTP API, in order. */
export async function servingScores(
  node: RoleProcess,
  pairs: ReadonlyArray<{ user: string; item: string }>,
): Promise<number[]> {
  return Promise.all(
    pairs.map(async (p) => {
      const res = await fetch(`${node.ready.http as string}/v1/score`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: p.user, candidates: [{ item: p.item }] }),
      });
      if (res.status !== 200) throw new Error(`score: HTTP ${res.status}: ${await res.text()}`);
      return ((await res.json()) as { scores: number[] }).scores[0]!;
    }),
  );
}
