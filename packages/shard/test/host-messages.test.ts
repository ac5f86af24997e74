import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { requestBytes } from '@freshet/nats';
import { decodeHostReply, decodePushReply, encodeHostRequest, encodePush, subjects } from '@freshet/protocol';
import {
  embeddingModel,
  keyOnShard,
  onePush,
  placeShardsInKv,
  uniqueName,
  useNats,
  useTempDirs,
  waitFor,
} from '@freshet/testkit';
import { compileShardHostOptions, ShardHost } from '../src/shard-host.js';

const nats = useNats();
const tempDir = useTempDirs();
const quiet = () => undefined;

describe('host messages', () => {
  it('hostMessagesInFlight must be a positive integer', () => {
    const base = { cluster: 'c', host: 'h', dataDir: 'd', shard: { model: embeddingModel('m') } };
    expect(compileShardHostOptions(base).hostMessagesInFlight).toBe(1024);
    expect(compileShardHostOptions({ ...base, hostMessagesInFlight: 3 }).hostMessagesInFlight).toBe(3);
    expect(() => compileShardHostOptions({ ...base, hostMessagesInFlight: 0 })).toThrow(
      /hostMessagesInFlight/,
    );
  });

  it('past hostMessagesInFlight a host message is answered OVERLOADED and applies nothing', async () => {
    const cluster = uniqueName('hmsg').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    await placeShardsInKv(nats.nc, cluster, ['h', 'h']);
    const host = new ShardHost(
      {
        cluster,
        host: 'h',
        nats: { servers: nats.url },
        dataDir: join(tempDir('host'), 'h'),
        pollMs: 50,
        hostMessagesInFlight: 1,
        // a push waits for its log record's fsync: the first message is still in flight when
        // the second arrives
        shard: { model: embeddingModel('m'), fsync: true, checkpointIntervalMs: 0 },
      },
      { log: quiet },
    );
    await host.start();
    try {
      await waitFor(() => host.shards.size === 2);
      const message = (id: string) =>
        encodeHostRequest({
          op: 'push',
          parts: [0, 1].map((shard) => ({
            shard,
            frame: encodePush(onePush(`${id}.${shard}`, keyOnShard(shard, 2))),
          })),
        });
      const send = (id: string) =>
        requestBytes(nats.nc, s.hostPush('h'), message(id), { timeoutMs: 5000 }).then((d) =>
          decodeHostReply(d, 2),
        );
      const ids = ['a', 'b', 'c'];
      const settled = await Promise.allSettled(ids.map(send));
      const refused = ids.filter((_, i) => settled[i]!.status === 'rejected');
      // the first is in flight until its fsync; the others arrive meanwhile
      expect(settled[0]!.status).toBe('fulfilled');
      expect(refused.length).toBeGreaterThan(0);
      for (const r of settled)
        if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'OVERLOADED' });
        else expect(r.value.map((p) => decodePushReply(p!).duplicate)).toEqual([false, false]);
      // a refused message's pushes were not applied: sent again they are new, and applied once
      for (const id of refused)
        expect((await send(id)).map((p) => decodePushReply(p!).duplicate)).toEqual([false, false]);
      for (const shard of [0, 1])
        expect(host.shards.get(shard)!.status()).toMatchObject({ version: ids.length, duplicates: 0 });
    } finally {
      await host.stop();
    }
  });
});
