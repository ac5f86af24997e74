import { parentPort, workerData } from 'node:worker_threads';
import type { NatsConnection } from 'nats';
import { connectNats, type Endpoint } from '@freshet/nats';
import { FreshetError, subjects, toErrorEnvelope } from '@freshet/protocol';
import { Shard } from './shard.js';
import { hostEndpoints, hostQueue } from './host-messages.js';
import { fromTag, serveParts, type OwnRoute } from './part-calls.js';
import { FramePacker, PortBatch } from './port-batch.js';
import type { StoppedShard, ThreadData, ToMain, ToThread } from './shard-thread-messages.js';
import { ThreadDeltas } from './thread-deltas.js';
import { ThreadPeers } from './thread-peers.js';

/*
 * The body of one of a shard host's shard threads (shard-threads.ts): it runs the shards the host
 * starts here, on its own NATS connection (their own subjects and checkpoints; their deltas too,
 * unless the host gathers them: `hostDeltas`), and answers the parts of host messages the host's
 * thread hands over. With `endpoints` it also answers host messages itself, in the host's queue
 * group: its own shards' parts here, the others' handed straight to their threads (thread-peers.ts).
 * Every shard of the host stays on the thread that started it until it stops.
 */

const port = parentPort!;
const data = workerData as ThreadData;
const shards = new Map<number, Shard>();
/** The shards started here, by their index (what this thread's host endpoints answer for itself). */
const local = new Map<number, Shard>();
/** A part for a shard of this thread (undefined: not running here). */
const own: OwnRoute = (shard, kind, frame) => local.get(shard)?.hostCall(kind, frame);
const peers = new ThreadPeers(own);
let endpoints: Endpoint[] = [];
let hostMessages = 0;
let nc: NatsConnection | undefined;

function post(m: ToMain, transfer: ArrayBuffer[] = []): void {
  port.postMessage(m, transfer);
}

function shardOf(sid: number): Shard {
  const s = shards.get(sid);
  if (!s) throw new FreshetError('NOT_READY', `no shard ${sid} on shard thread ${data.thread}`);
  return s;
}

async function init(): Promise<void> {
  nc = await connectNats(data.nats, `freshet-shard-host-${data.cluster}-${data.host}-t${data.thread}`, {
    inboxPrefix: subjects(data.cluster).inboxPrefix('shard'),
  });
  if (data.endpoints)
    endpoints = hostEndpoints(
      nc,
      data.cluster,
      data.host,
      (shard, kind, frame, handOffs) => own(shard, kind, frame) ?? peers.call(shard, kind, frame, handOffs),
      {
        maxInFlight: data.endpoints.maxInFlight,
        queue: hostQueue(data.host),
        onMessage: () => hostMessages++,
      },
    );
}

/** Forgets `s` as this thread's run of its shard (a later run here may have replaced it). */
function unlisted(s: Shard): void {
  if (local.get(s.options.shard) === s) local.delete(s.options.shard);
}

/** A frame moved to the host's thread (copied first if it is a view of a larger buffer). */
function owned(frame: Uint8Array): Uint8Array<ArrayBuffer> {
  return frame.byteOffset === 0 &&
    frame.byteLength === frame.buffer.byteLength &&
    frame.buffer instanceof ArrayBuffer
    ? (frame as Uint8Array<ArrayBuffer>)
    : frame.slice();
}

let nextDetach = 1;
const detaching = new Map<number, () => void>();
const hostDeltas = data.hostDeltas
  ? new ThreadDeltas({
      attach: (shard, intervalMs) => post({ t: 'deltas-attach', shard, intervalMs }),
      detach: (shard) =>
        new Promise<void>((resolve) => {
          const id = nextDetach++;
          detaching.set(id, resolve);
          post({ t: 'deltas-detach', id, shard });
        }),
      publish: (shard, frame) => {
        const f = owned(frame);
        post({ t: 'delta', shard, frame: f }, [f.buffer]);
      },
    })
  : undefined;

function stopped(s: Shard): StoppedShard {
  return { status: s.status(), handedOff: s.handedOff, finalCheckpointWritten: s.finalCheckpointWritten };
}

async function handle(
  m: Exclude<ToThread, { op: 'calls' | 'tick' | 'detached' | 'peer' }>,
): Promise<unknown> {
  switch (m.op) {
    case 'init':
      await init();
      return null;
    case 'start': {
      const s = new Shard(m.options, {
        nc: nc!,
        log: (level, msg, fields) =>
          post({ t: 'log', sid: m.sid, level, msg, ...(fields ? { fields } : {}) }),
        ...(hostDeltas ? { hostDeltas } : {}),
      });
      shards.set(m.sid, s);
      try {
        await s.start();
      } catch (e) {
        await s.stop().catch(() => undefined);
        shards.delete(m.sid);
        throw e;
      }
      local.set(s.options.shard, s);
      return s.restore ?? null;
    }
    case 'stop': {
      const s = shards.get(m.sid);
      if (!s) return null;
      unlisted(s);
      await s.stop();
      // kept until its hand-off is finished (its upload may be retried)
      if (s.handedOff) shards.delete(m.sid);
      return stopped(s);
    }
    case 'finish': {
      const s = shards.get(m.sid);
      if (!s) return null;
      unlisted(s);
      await s.finishHandOff();
      shards.delete(m.sid);
      return stopped(s);
    }
    case 'checkpoint':
      return shardOf(m.sid).checkpoint();
    case 'reload':
      return shardOf(m.sid).reload(m.checkpoint);
    case 'forget':
      return shardOf(m.sid).forgetUser(m.user, m.fields);
    case 'routes':
      peers.route(m.set);
      return null;
    case 'close':
      // no more host messages here (the queue group's other members take them), then the shards
      await Promise.allSettled(endpoints.splice(0).map((e) => e.drain()));
      peers.close();
      local.clear();
      await Promise.allSettled([...shards.values()].map((s) => s.stop()));
      shards.clear();
      await nc?.drain().catch(() => undefined);
      return null;
  }
}

/** The shards' states and statuses, after every command and every status interval. */
function statuses(): void {
  const list = [...shards].map(([sid, s]) => ({ sid, ...stopped(s) }));
  if (list.length || data.endpoints) post({ t: 'status', list, hostMessages });
}

const timer = setInterval(statuses, data.statusMs);
timer.unref();

const replies = new PortBatch((parts) =>
  post({ t: 'replies', parts }, [parts.meta.buffer, parts.data.buffer]),
);

port.on('message', (m: ToThread) => {
  if (m.op === 'tick') {
    void (hostDeltas?.tick(m.shards) ?? Promise.resolve([])).then((frames) => {
      const packer = new FramePacker();
      for (const f of frames) packer.add(f.shard, 0, f.frame);
      const parts = packer.take();
      post({ t: 'ticked', id: m.id, parts }, [parts.meta.buffer, parts.data.buffer]);
    });
    return;
  }
  if (m.op === 'detached') {
    detaching.get(m.id)?.();
    detaching.delete(m.id);
    return;
  }
  if (m.op === 'calls') {
    serveParts(
      m.parts,
      (tag, frame) => {
        const [sid, kind] = fromTag(tag);
        return shards.get(sid)?.hostCall(kind, frame);
      },
      replies,
    );
    return;
  }
  if (m.op === 'peer') {
    peers.link(m.thread, m.port);
    return;
  }
  void handle(m).then(
    // statuses first: a caller reading the status after its command sees the command's effect
    (value) => {
      statuses();
      post({ t: 'done', id: m.id, value });
    },
    (e: unknown) => {
      statuses();
      post({ t: 'done', id: m.id, error: toErrorEnvelope(e) });
    },
  );
});
