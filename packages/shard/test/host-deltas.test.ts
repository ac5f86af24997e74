import { describe, expect, it } from 'vitest';
import { requestBytes } from '@freshet/nats';
import { decodeDelta, decodeHostDelta, decodePushReply, encodePush, subjects } from '@freshet/protocol';
import { embeddingModel, keyOnShard, onePush, uniqueName, useNats, useTempDirs } from '@freshet/testkit';
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
});
