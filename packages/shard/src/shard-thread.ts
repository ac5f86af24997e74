import { parentPort, workerData } from 'node:worker_threads';
import type { NatsConnection } from 'nats';
import { connectNats } from '@freshet/nats';
import { FreshetError, subjects, toErrorEnvelope } from '@freshet/protocol';
import { Shard } from './shard.js';
import { FramePacker, PortBatch, unpackFrames } from './port-batch.js';
import type { StoppedShard, ThreadData, ToMain, ToThread } from './shard-thread-messages.js';
import { ThreadDeltas } from './thread-deltas.js';

/*
 * The body of one of a shard host's shard threads (shard-threads.ts): it runs the shards the host
 * starts here, on its own NATS connection (their own subjects and checkpoints; their deltas too,
 * unless the host gathers them: `hostDeltas`), and answers the parts of host messages the host's
 * thread hands over. Every shard of the host stays on the
 * thread that started it until it stops.
 */

const port = parentPort!;
const data = workerData as ThreadData;
const shards = new Map<number, Shard>();
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

async function handle(m: Exclude<ToThread, { op: 'calls' | 'tick' | 'detached' }>): Promise<unknown> {
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
      return s.restore ?? null;
    }
    case 'stop': {
      const s = shards.get(m.sid);
      if (!s) return null;
      await s.stop();
      // kept until its hand-off is finished (its upload may be retried)
      if (s.handedOff) shards.delete(m.sid);
      return stopped(s);
    }
    case 'finish': {
      const s = shards.get(m.sid);
      if (!s) return null;
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
    case 'close':
      await Promise.allSettled([...shards.values()].map((s) => s.stop()));
      shards.clear();
      await nc?.drain().catch(() => undefined);
      return null;
  }
}

/** The shards' states and statuses, after every command and every status interval. */
function statuses(): void {
  const list = [...shards].map(([sid, s]) => ({ sid, ...stopped(s) }));
  if (list.length) post({ t: 'status', list });
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
    unpackFrames(m.parts, (id, tag, frame) => {
      const r = shards.get(tag >> 1)?.hostCall(tag & 1 ? 'push' : 'pull', frame!);
      // a shard's handler never rejects (error envelopes): undefined only if it did anyway
      if (r instanceof Promise)
        void r.then(
          (f) => replies.add(id, 0, f),
          () => replies.add(id, 0, undefined),
        );
      else replies.add(id, 0, r);
    });
    // what was answered at once goes back now, not a turn later
    replies.flush();
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
