import { describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { requestBytes } from '@freshet/nats';
import {
  decodePullReply,
  decodePushReply,
  encodePull,
  encodePush,
  subjects,
  type PullRequest,
  type PushRequest,
} from '@freshet/protocol';
import { uniqueName, useNats, useTempDirs } from '@freshet/testkit';
import { PullSessions } from '../src/pull-sessions.js';
import { aligned, startShard } from '../src/shard.js';

const nats = useNats();
const tempDir = useTempDirs();

const model = {
  name: 'm',
  tables: [
    { name: 'emb', dim: 4, optimizer: { kind: 'adam', lr: 0.01 }, staleness: { policy: 'none' }, ttlMs: 0 },
  ],
};
const KEYS = Uint32Array.from([11, 0, 12, 0, 13, 1, 14, 7]);

const pullOf = (session: string | undefined, keys = KEYS): PullRequest => ({
  session,
  tables: [{ t: 0, keys }],
});
function pushOf(id: string, session: string | undefined, g: number, n = KEYS.length / 2): PushRequest {
  return {
    id,
    worker: 'w',
    clock: 0,
    base: 0,
    session,
    tables: [
      {
        t: 0,
        dim: 4,
        keys: session ? new Uint32Array(0) : KEYS,
        keyless: session !== undefined,
        grads: Float32Array.from({ length: n * 4 }, (_, i) => g * (1 + (i % 5))),
        counts: new Uint32Array(n).fill(2),
      },
    ],
  };
}
async function call(nc: NatsConnection, subject: string, body: Uint8Array) {
  return aligned(await requestBytes(nc, subject, body, { timeoutMs: 5000 }));
}

describe('pull sessions (a push naming its pull instead of its keys)', () => {
  it('keeps keys within a byte budget and an age, oldest out first, and refuses a push that does not match', () => {
    const s = new PullSessions(KEYS.byteLength * 2, 1000);
    expect(s.remember(pullOf('a'), 0)).toBe(true);
    expect(s.remember(pullOf('b'), 10)).toBe(true);
    expect(s.remember(pullOf('c'), 20)).toBe(true); // over budget: a goes
    expect(s.stats()).toMatchObject({ sessions: 2, bytes: KEYS.byteLength * 2, dropped: 1 });
    expect(() => s.resolve(pushOf('p', 'a', 0.1))).toThrow(
      expect.objectContaining({ code: 'SESSION_UNKNOWN' }),
    );
    expect(() => s.resolve(pushOf('p', 'b', 0.1, 3))).toThrow(
      expect.objectContaining({ code: 'WRONG_LENGTH' }),
    );
    const other = { ...pushOf('p', 'b', 0.1), tables: [{ ...pushOf('p', 'b', 0.1).tables[0]!, t: 3 }] };
    expect(() => s.resolve(other)).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    const resolved = s.resolve(pushOf('p', 'b', 0.1));
    expect(Array.from(resolved.tables[0]!.keys)).toEqual(Array.from(KEYS));
    expect(resolved.tables[0]!.keyless).toBeUndefined();
    // a push with its keys passes as it is
    const keyed = pushOf('q', undefined, 0.1);
    expect(s.resolve(keyed)).toBe(keyed);
    s.release('b');
    s.sweep(1019); // c is 999 ms old: kept
    expect(s.stats()).toMatchObject({ sessions: 1, resolved: 1, unknown: 1 });
    s.sweep(1020);
    expect(s.stats()).toMatchObject({ sessions: 0, bytes: 0, dropped: 2 });
    // a single pull larger than the budget is not kept (its push carries keys)
    expect(new PullSessions(8, 1000).remember(pullOf('big'))).toBe(false);
    expect(new PullSessions(0, 1000).remember(pullOf('off'))).toBe(false);
  });

  it('applies a keyless push exactly as the same push with keys, logs the keys, and refuses an unknown session', async () => {
    const dirs = [tempDir('sessions-a'), tempDir('sessions-b')];
    const clusters = [uniqueName('sess-a'), uniqueName('sess-b')];
    const opts = (i: number) => ({
      cluster: clusters[i]!,
      shard: 0,
      shards: 1,
      model,
      dataDir: dirs[i]!,
      checkpointIntervalMs: 0,
    });
    const a = await startShard(opts(0), { nc: nats.nc, log: () => undefined });
    const b = await startShard(opts(1), { nc: nats.nc, log: () => undefined });
    let restored: Awaited<ReturnType<typeof startShard>> | undefined;
    try {
      const sa = subjects(clusters[0]!);
      const sb = subjects(clusters[1]!);
      let initial: number[] | undefined;
      for (let step = 0; step < 3; step++) {
        const session = `w.${step}`;
        const pa = decodePullReply(await call(nats.nc, sa.pull(0), encodePull(pullOf(session))));
        const pb = decodePullReply(await call(nats.nc, sb.pull(0), encodePull(pullOf(undefined))));
        expect(pa.session).toBe(true);
        expect(pb.session).toBeUndefined();
        expect(Array.from(pa.tables[0]!.values)).toEqual(Array.from(pb.tables[0]!.values));
        initial ??= Array.from(pa.tables[0]!.values);
        const keyless = encodePush(pushOf(`p${step}`, session, 0.01 * (step + 1)));
        const keyed = encodePush(pushOf(`p${step}`, undefined, 0.01 * (step + 1)));
        expect(keyed.byteLength - keyless.byteLength).toBeGreaterThanOrEqual(KEYS.byteLength - 32);
        const ra = decodePushReply(await call(nats.nc, sa.push(0), keyless));
        const rb = decodePushReply(await call(nats.nc, sb.push(0), keyed));
        expect(ra).toMatchObject({ applied: 4, duplicate: false });
        expect(rb).toMatchObject({ applied: 4, duplicate: false });
        // a retry of the applied push is a duplicate, though its session is gone
        expect(decodePushReply(await call(nats.nc, sa.push(0), keyless)).duplicate).toBe(true);
      }
      const rows = (core: typeof a.core) =>
        Array.from(core.pull({ tables: [{ t: 0, keys: KEYS }] }).tables[0]!.values);
      expect(rows(a.core)).toEqual(rows(b.core));
      // and the pushes did move them
      expect(rows(a.core)).not.toEqual(initial);

      // a push naming a session this shard never held is refused and applies nothing
      const before = rows(a.core);
      await expect(
        call(nats.nc, sa.push(0), encodePush(pushOf('lost', 'w.never', 0.5))).then(decodePushReply),
      ).rejects.toMatchObject({
        code: 'SESSION_UNKNOWN',
      });
      expect(rows(a.core)).toEqual(before);
      expect(a.status().pullSessions).toEqual({ sessions: 0, bytes: 0, resolved: 3, unknown: 1, dropped: 0 });

      // the log holds the keys: a shard restoring the directory has the same rows
      restored = await startShard(
        { ...opts(0), cluster: uniqueName('sess-replay') },
        { nc: nats.nc, log: () => undefined },
      );
      expect(rows(restored.core)).toEqual(before);
    } finally {
      await restored?.stop();
      await a.stop();
      await b.stop();
    }
  });

  it('answers pulls without a session when sessions are off', async () => {
    const cluster = uniqueName('sess-off');
    const shard = await startShard(
      { cluster, shard: 0, shards: 1, model, limits: { pullSessionBytes: 0 } },
      { nc: nats.nc, log: () => undefined },
    );
    try {
      const r = decodePullReply(await call(nats.nc, subjects(cluster).pull(0), encodePull(pullOf('w.1'))));
      expect(r.session).toBeUndefined();
      expect(shard.status().pullSessions).toBeUndefined();
    } finally {
      await shard.stop();
    }
  });
});
