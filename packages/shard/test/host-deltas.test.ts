import { describe, expect, it } from 'vitest';
import { requestBytes } from '@freshet/nats';
import { decodeDelta, decodeHostDelta, decodePushReply, encodePush, subjects } from '@freshet/protocol';
import {
  embeddingModel,
  keyOnShard,
  onePush,
  uniqueName,
  useNats,
  useTempDirs,
  waitFor,
} from '@freshet/testkit';
import { HostDeltas } from '../src/host-deltas.js';
import { Shard } from '../src/shard.js';

const nats = useNats();
const tempDir = useTempDirs();
const model = embeddingModel('m');

const keyOf = (shard: number, n: number) => keyOnShard(shard, 2, n);

const push = (id: string, key: number) => encodePush(onePush(id, key));

describe('host deltas', () => {
  it("keep each shard's deltas in seq order across host and own subjects, a stopping shard's last one included", async () => {
    const cluster = uniqueName('hd');
    const s = subjects(cluster);
    // shard → the seqs seen, in arrival order, whichever subject carried them
    const seen = new Map<number, number[]>();
    const note = (frame: Uint8Array) => {
      const d = decodeDelta(frame);
      seen.set(d.shard, [...(seen.get(d.shard) ?? []), d.seq]);
    };
    let hostMessages = 0;
    const subs = [
      nats.nc.subscribe(s.deltaAll, { callback: (_e, m) => note(m.data) }),
      nats.nc.subscribe(s.hostDeltaAll, {
        callback: (_e, m) => {
          hostMessages++;
          for (const p of decodeHostDelta(m.data)) note(p.frame);
        },
      }),
    ];
    await nats.nc.flush();
    const host = new HostDeltas(nats.nc, cluster, 'h', 512 * 1024);
    const shards = [0, 1].map(
      (shard) =>
        new Shard(
          {
            cluster,
            shard,
            shards: 2,
            nats: { servers: nats.url },
            model,
            deltaIntervalMs: 10,
            // a log: each delta waits for its seq to be written, so a tick spans real time
            dataDir: tempDir(`hd${shard}`),
            fsync: false,
          },
          { nc: nats.nc, log: () => undefined, hostDeltas: host },
        ),
    );
    try {
      await Promise.all(shards.map((x) => x.start()));
      for (let i = 0; i < 20; i++) {
        await Promise.all(
          shards.map((_, sh) =>
            requestBytes(nats.nc, s.push(sh), push(`p${i}.${sh}`, keyOf(sh, i)), { timeoutMs: 3000 }),
          ),
        ).then((r) => r.forEach((b) => decodePushReply(b)));
        if (i % 5 === 4) await new Promise((r) => setTimeout(r, 15));
      }
      // one more push, then stop shard 0 at once: its last delta goes out as it stops
      decodePushReply(
        await requestBytes(nats.nc, s.push(0), push('last', keyOf(0, 30)), { timeoutMs: 3000 }),
      );
      await shards[0]!.stop();
      const last = shards[0]!.status().deltaSeq;
      await nats.nc.flush();
      const seqs0 = seen.get(0) ?? [];
      expect(seqs0.at(-1)).toBe(last);
      for (const seqs of seen.values()) {
        // consecutive from the first one seen: nothing reordered, nothing lost
        expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i));
      }
      expect(hostMessages).toBeGreaterThan(0);
      expect(host.counters.messages).toBe(hostMessages);
    } finally {
      for (const sub of subs) sub.unsubscribe();
      await Promise.all(shards.map((x) => x.stop()));
      await host.stop();
    }
  });

  /** What a host of 4 shards with `slices` sent: each message's subject and its parts' shards. */
  async function sliced(slices: number) {
    const cluster = uniqueName('hds');
    const s = subjects(cluster);
    const SHARDS = 4;
    // recorded only: an expect in a NATS callback would not fail the test
    const hostMessages: { subject: string; parts: { shard: number; decoded: number; seq: number }[] }[] = [];
    const own: { shard: number; seq: number }[] = [];
    const subs = [
      nats.nc.subscribe(s.deltaAll, {
        callback: (_e, m) => {
          const d = decodeDelta(m.data);
          own.push({ shard: d.shard, seq: d.seq });
        },
      }),
      nats.nc.subscribe(s.hostDeltaAll, {
        callback: (_e, m) =>
          hostMessages.push({
            subject: m.subject,
            parts: decodeHostDelta(m.data).map((p) => {
              const d = decodeDelta(p.frame);
              return { shard: p.shard, decoded: d.shard, seq: d.seq };
            }),
          }),
      }),
    ];
    await nats.nc.flush();
    const host = new HostDeltas(nats.nc, cluster, 'h', 512 * 1024, slices);
    const shards = Array.from(
      { length: SHARDS },
      (_, shard) =>
        new Shard(
          {
            cluster,
            shard,
            shards: SHARDS,
            nats: { servers: nats.url },
            model,
            // long enough that a round's pushes to all four shards land in one tick
            deltaIntervalMs: 50,
            dataDir: tempDir(`hds${slices}.${shard}`),
            fsync: false,
          },
          { nc: nats.nc, log: () => undefined, hostDeltas: host },
        ),
    );
    try {
      await Promise.all(shards.map((x) => x.start()));
      for (let i = 0; i < 6; i++) {
        await Promise.all(
          shards.map((_, sh) =>
            requestBytes(nats.nc, s.push(sh), push(`p${i}.${sh}`, keyOnShard(sh, SHARDS, i)), {
              timeoutMs: 3000,
            }),
          ),
        ).then((r) => r.forEach((b) => decodePushReply(b)));
        await new Promise((r) => setTimeout(r, 60));
      }
      // every shard's deltas are out: its last seq seen on one subject or the other
      const lastSeqs = shards.map((x) => x.status().deltaSeq);
      const seenLast = () =>
        lastSeqs.every(
          (q, sh) =>
            own.some((d) => d.shard === sh && d.seq === q) ||
            hostMessages.some((m) => m.parts.some((p) => p.shard === sh && p.seq === q)),
        );
      await waitFor(seenLast, { timeoutMs: 5000 });
    } finally {
      await host.stop();
      await Promise.all(shards.map((x) => x.stop()));
      await nats.nc.flush();
      for (const sub of subs) sub.unsubscribe();
    }
    return { s, hostMessages, own, counters: { ...host.counters } };
  }

  it('with servingSlices 2 go out per slice: shards 0 and 2 on slice 0, 1 and 3 on slice 1', async () => {
    const { s, hostMessages, own, counters } = await sliced(2);
    const slice0 = s.hostDeltaSlice('h', 2, 0);
    const slice1 = s.hostDeltaSlice('h', 2, 1);
    expect(hostMessages.length).toBeGreaterThan(0);
    // no message on the whole host's subject nor anywhere but the two slices' subjects
    expect(hostMessages.filter((m) => m.subject === s.hostDelta('h'))).toEqual([]);
    expect(hostMessages.every((m) => m.subject === slice0 || m.subject === slice1)).toBe(true);
    const shardsOn = (subject: string) =>
      hostMessages.filter((m) => m.subject === subject).map((m) => m.parts.map((p) => p.shard));
    expect(
      shardsOn(slice0)
        .flat()
        .every((sh) => sh === 0 || sh === 2),
    ).toBe(true);
    expect(
      shardsOn(slice1)
        .flat()
        .every((sh) => sh === 1 || sh === 3),
    ).toBe(true);
    // each slice's shards went out together (a grouping by anything else would split or mix them)
    expect(shardsOn(slice0).some((parts) => parts.includes(0) && parts.includes(2))).toBe(true);
    expect(shardsOn(slice1).some((parts) => parts.includes(1) && parts.includes(3))).toBe(true);
    // every part's frame is its shard's own delta
    expect(hostMessages.flatMap((m) => m.parts).every((p) => p.decoded === p.shard)).toBe(true);
    // each shard's seqs consecutive across both subjects, nothing lost or reordered
    for (let sh = 0; sh < 4; sh++) {
      const seqs = [
        ...own.filter((d) => d.shard === sh).map((d) => d.seq),
        ...hostMessages.flatMap((m) => m.parts.filter((p) => p.shard === sh).map((p) => p.seq)),
      ].sort((a, b) => a - b);
      expect(seqs.length).toBeGreaterThan(0);
      expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i));
    }
    expect(counters.messages).toBe(hostMessages.length);
    expect(counters.parts).toBe(hostMessages.reduce((n, m) => n + m.parts.length, 0));
  });

  it('with servingSlices 1 go out whole on the host subject, as before', async () => {
    const { s, hostMessages } = await sliced(1);
    expect(hostMessages.length).toBeGreaterThan(0);
    expect(hostMessages.every((m) => m.subject === s.hostDelta('h'))).toBe(true);
    // both slices' shards in one message: nothing split
    expect(
      hostMessages.some(
        (m) => m.parts.some((p) => p.shard % 2 === 0) && m.parts.some((p) => p.shard % 2 === 1),
      ),
    ).toBe(true);
  });
});
