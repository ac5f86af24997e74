import { join } from 'node:path';
import type { NatsFixture } from '@freshet/testkit';
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { cliMainPath, placeShards, type PlaceReport } from '@freshet/cli';
import { decodeSnapshotPage, encodeSnapshotRequest, subjects } from '@freshet/protocol';
import { uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import {
  faultModel,
  faultSpec,
  outstanding,
  prepareCluster,
  publishExamples,
  PushLedger,
  shardStatus,
  startRole,
  workerOptions,
  useRoleProcesses,
  type RoleProcess,
  servingScores,
} from './fault-kit.js';

const execFileP = promisify(execFile);
const log = (msg: string) => console.log(`[reshard] ${msg}`);

/** Every row a shard serves (weights; all tables), as `table:key` → the bytes of its values. */
async function shardRows(
  nc: NatsFixture['nc'],
  cluster: string,
  shard: number,
): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (let t = 0; t < faultSpec.tables.length; t++) {
    let cursor: number | null = 0;
    while (cursor !== null) {
      const r = await nc.request(
        subjects(cluster).snapshot(shard),
        encodeSnapshotRequest({ t, cursor, limit: 4096 }),
        {
          timeout: 5000,
        },
      );
      const page = decodeSnapshotPage(r.data);
      for (let i = 0; i < page.keys.length / 2; i++) {
        const v = page.values.subarray(i * page.dim, (i + 1) * page.dim);
        out.set(
          `${t}:${page.keys[2 * i]}:${page.keys[2 * i + 1]}`,
          Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex'),
        );
      }
      cursor = page.next;
    }
  }
  return out;
}

/**
 * Shards that move between hosts under load (docs/resharding.md). 4 shards, 4 partitions, 2
 * worker processes, 2 serving nodes; shard hosts are `freshet shard-host` processes. The 4 shards
 * start on 2 hosts; while the second of 4 waves of 600 labelled events is trained, two more hosts
 * start and `placeShards` spreads the shards over 3, then 4 (a shard moves each time); during the
 * third wave `freshet shard place` takes them back to 2 hosts (2 move) and the extra hosts stop.
 * Counted as in the fault tests: every event the stream acknowledged is applied exactly once (Σ
 * of the dense example counts of distinct accepted push ids), each shard's version equals the
 * push ids it accepted, nothing is left unacked. Then, quiet: a shard moved to another host
 * (`freshet shard move`) serves bit-identical rows (restored from the Object Store alone); its
 * host is killed for good, its lease freed by hand (`freshet shard release --force`, refused
 * while the shard answers) and the shard moved on, again bit-identical; a host's metrics follow
 * its shards; and the serving node that followed every move scores like one started afterwards
 * from snapshots. Hosts h2 and h3 run their shards in shard threads (host option `threads`).
 */
describe('resharding: shards move between hosts under load', () => {
  const nats = useNats();
  useRoleProcesses();
  const tempDir = useTempDirs();

  it('moves shards 2 → 3 → 4 → 2 hosts while training: none lost, none twice, rows identical', async () => {
    const cluster = uniqueName('reshard').replace(/[^A-Za-z0-9_-]/g, '');
    const SHARDS = 4;
    const PARTS = 4;
    const WAVE = 600;
    const dir = tempDir('reshard');
    await prepareCluster(nats.nc, cluster, PARTS);
    // the cluster's KV bucket (`freshet init` makes it) holds the placement and the leases
    await nats.nc.jetstream().views.kv(subjects(cluster).kvBucket);
    const tap = await nats.connect('ledger');
    const ledger = PushLedger.start(tap, cluster);
    let hostDeltas = 0;
    tap.subscribe(subjects(cluster).hostDeltaAll, { callback: () => hostDeltas++ });
    await tap.flush();

    /** `freshet <args> --cluster C --nats URL` as an operator runs it (--json where it has one) */
    const freshet = (...args: string[]) =>
      execFileP(
        process.execPath,
        [
          cliMainPath,
          ...args,
          '--cluster',
          cluster,
          '--nats',
          nats.url,
          ...(args[1] === 'release' ? [] : ['--json']),
        ],
        { encoding: 'utf8', timeout: 90_000 },
      );
    const first = await placeShards(nats.nc, cluster, { hosts: ['h1', 'h2'], shards: SHARDS, wait: false });
    expect(first.hosts).toEqual(['h1', 'h1', 'h2', 'h2']);
    const host = (name: string) =>
      startRole(
        'shard-host',
        {
          cluster,
          host: name,
          nats: { servers: nats.url },
          dataDir: join(dir, name),
          // h2 and h3 run their shards in shard threads, h1 and h4 on their own thread: moves,
          // admin commands and metrics work across both
          threads: name === 'h2' || name === 'h3' ? 2 : 0,
          // no periodic checkpoints: a move uploads a final one
          // deltas in one message per host: the serving nodes follow every move through them
          shard: { model: faultSpec, checkpointIntervalMs: 0, hostDeltas: true },
        },
        ['--metrics-port', '0'],
      );
    const hosts: Record<string, RoleProcess> = {};
    for (const h of ['h1', 'h2']) hosts[h] = await host(h);
    expect(hosts.h1!.ready.shards).toEqual([0, 1]);

    const servingOpts = (id: string) => ({
      cluster,
      id,
      shards: SHARDS,
      nats: { servers: nats.url },
      model: faultModel,
    });
    const s0 = await startRole('serving', servingOpts('s0'));
    // wb's host messages linger for its next batches' parts (2000 × 2 workers / 400 = 10 ms):
    // windows of parts that a move leaves "not here", or a host's failure sends direct
    const lingering = { hostRouting: { hostMsgsPerS: 400 } };
    await Promise.all(
      ['wa', 'wb'].map((id) =>
        startRole(
          'worker',
          workerOptions(cluster, id, SHARDS, PARTS, nats.url, id === 'wb' ? lingering : {}),
        ),
      ),
    );
    const settle = async (what: string) => {
      await waitFor(async () => (await outstanding(nats.nc, cluster, PARTS)) === 0, {
        timeoutMs: 60_000,
        message: `${what}: every event acked`,
      });
    };

    await publishExamples(nats.nc, cluster, 0, WAVE, PARTS);
    for (const h of ['h3', 'h4']) hosts[h] = await host(h);
    expect(hosts.h3!.ready.shards).toEqual([]);

    // grow 2 → 3 → 4 hosts while wave 2 is being published and trained
    const wave2 = publishExamples(nats.nc, cluster, WAVE, WAVE, PARTS);
    log(`grow: ${await outstanding(nats.nc, cluster, PARTS)} events outstanding as it starts`);
    const three = await placeShards(nats.nc, cluster, { hosts: ['h1', 'h2', 'h3'], timeoutMs: 60_000 });
    const four = await placeShards(nats.nc, cluster, { hosts: ['h1', 'h2', 'h3', 'h4'], timeoutMs: 60_000 });
    await wave2;
    log(`grow to 3 hosts: moved ${JSON.stringify(three.moved)} in ${three.ms} ms`);
    log(`grow to 4 hosts: moved ${JSON.stringify(four.moved)} in ${four.ms} ms`);
    expect(three.hosts).toEqual(['h1', 'h1', 'h2', 'h3']);
    expect(four.moved).toEqual([{ shard: 1, from: 'h1', to: 'h4' }]);
    expect(four.hosts).toEqual(['h1', 'h4', 'h2', 'h3']);

    // shrink with the operator's command, while wave 3 is being published and trained
    const wave3 = publishExamples(nats.nc, cluster, 2 * WAVE, WAVE, PARTS);
    // (asynchronously: the test process keeps publishing meanwhile)
    const cli = await freshet('shard', 'place', '--hosts', 'h1,h2');
    const shrink = JSON.parse(cli.stdout) as PlaceReport;
    await wave3;
    log(`shrink (freshet shard place): moved ${JSON.stringify(shrink.moved)} in ${shrink.ms} ms`);
    expect(shrink.moved.map((m) => m.shard)).toEqual([1, 3]);
    expect(shrink.hosts).toEqual(['h1', 'h1', 'h2', 'h2']);
    for (const h of ['h3', 'h4']) expect(await hosts[h]!.handle.stop(10_000)).toBe(0);

    await publishExamples(nats.nc, cluster, 3 * WAVE, WAVE, PARTS);
    await settle('after the moves');
    await tap.flush();
    const total = 4 * WAVE;
    log(
      `applied ${ledger.examples()} of ${total}; push requests ${ledger.requests}, ` +
        `${ledger.hostMessages} host messages`,
    );
    expect(ledger.examples()).toBe(total); // none lost, none twice
    // the workers sent pushes for a host's shards together (worker hostRouting) through the moves
    expect(ledger.hostMessages).toBeGreaterThan(0);
    // and the hosts published their shards' deltas together (shard option hostDeltas)
    expect(hostDeltas).toBeGreaterThan(0);
    for (let i = 0; i < SHARDS; i++) {
      const st = await shardStatus(nats.nc, cluster, i);
      expect(st.state).toBe('running');
      expect(st.version).toBe(ledger.acceptedBy(i)); // every accepted push present once
    }

    // quiet now: a move carries the rows bit for bit (h3 takes one of h2's shards)
    const rowsOf = async () => Promise.all([2, 3].map((i) => shardRows(nats.nc, cluster, i)));
    const versionsOf = async () =>
      Promise.all([2, 3].map(async (i) => (await shardStatus(nats.nc, cluster, i)).version));
    const before = await rowsOf();
    const versionsBefore = await versionsOf();
    expect(before[0]!.size + before[1]!.size).toBeGreaterThan(20);
    const metricsBefore = await (await fetch(hosts.h2!.ready.metrics as string)).text();
    expect(metricsBefore).toMatch(/freshet_actor_up\{[^}]*id="shard-3"[^}]*\} 1/);
    hosts.h3 = await host('h3');
    const move = JSON.parse(
      (await freshet('shard', 'move', '--shard', '3', '--to', 'h3')).stdout,
    ) as PlaceReport;
    log(`freshet shard move: ${JSON.stringify(move.moved)} in ${move.ms} ms`);
    expect(move.moved).toEqual([{ shard: 3, from: 'h2', to: 'h3' }]);
    const same = async (what: string) => {
      const after = await rowsOf();
      expect(await versionsOf(), what).toEqual(versionsBefore);
      for (let j = 0; j < 2; j++) {
        expect(after[j]!.size, what).toBe(before[j]!.size);
        for (const [k, v] of before[j]!) expect(after[j]!.get(k), `${what}: ${k}`).toBe(v);
      }
    };
    await same('moved to h3');

    // a host's metrics: one set per shard it runs now, a shard that left reads as down
    const metrics = await (await fetch(hosts.h2!.ready.metrics as string)).text();
    const gauge = (name: string, id: string) =>
      Number(new RegExp(`^${name}\\{[^}]*id="${id}"[^}]*\\} (\\S+)$`, 'm').exec(metrics)?.[1]);
    expect(gauge('freshet_shard_version', 'shard-2')).toBe(versionsBefore[0]);
    expect(gauge('freshet_actor_up', 'shard-3')).toBe(0);
    expect(gauge('freshet_actor_up', 'shard-2')).toBe(1);
    // the host messages it answered, by thread: its own and its two shard threads (a queue group)
    const answered = (thread: string) =>
      Number(
        new RegExp(`^freshet_shard_host_messages_total\\{[^}]*thread="${thread}"[^}]*\\} (\\S+)$`, 'm').exec(
          metrics,
        )?.[1],
      );
    expect(['host', '0', '1'].map(answered).every((n) => Number.isFinite(n))).toBe(true);
    expect(['host', '0', '1'].map(answered).reduce((x, y) => x + y)).toBeGreaterThan(0);
    // and how busy each thread was over the last second (once a second has passed between scrapes)
    const busy = await waitFor(
      async () => {
        const text = await (await fetch(hosts.h2!.ready.metrics as string)).text();
        const of = (thread: string) =>
          Number(
            new RegExp(`^freshet_shard_host_thread_busy\\{[^}]*thread="${thread}"[^}]*\\} (\\S+)$`, 'm').exec(
              text,
            )?.[1],
          );
        const all = ['host', '0', '1'].map(of);
        return all.every((b) => Number.isFinite(b)) ? all : undefined;
      },
      { timeoutMs: 5000, intervalMs: 300 },
    );
    expect(busy.every((b) => b >= 0 && b <= 1)).toBe(true);

    // h3 lost for good (kill -9, its volume gone): its lease is freed by hand, the shard moves on
    await expect(freshet('shard', 'release', '--shard', '3', '--force')).rejects.toThrow(/answers/);
    hosts.h3!.handle.child.kill('SIGKILL');
    await hosts.h3!.handle.exited;
    await expect(freshet('shard', 'release', '--shard', '3')).rejects.toThrow(/--force/);
    expect((await freshet('shard', 'release', '--shard', '3', '--force')).stdout).toContain(
      'lease of h3 released',
    );
    const back = JSON.parse(
      (await freshet('shard', 'move', '--shard', '3', '--to', 'h2')).stdout,
    ) as PlaceReport;
    log(`after losing h3: shard 3 back on h2 in ${back.ms} ms`);
    await same('restored on h2 from the Object Store after h3 was lost');
    const where = JSON.parse((await freshet('shard', 'placement')).stdout) as {
      shards: Array<{ host: string; answers: boolean; lease: { holder: string } }>;
    };
    expect(where.shards.map((x) => [x.host, x.lease.holder, x.answers])).toEqual([
      ['h1', 'h1', true],
      ['h1', 'h1', true],
      ['h2', 'h2', true],
      ['h2', 'h2', true],
    ]);

    // the serving node that followed every move scores like one that starts now
    const s1 = await startRole('serving', servingOpts('s1'));
    const pairs = Array.from({ length: 30 }, (_, i) => ({ user: `u${i * 37}`, item: `i${(i * 37) % 50}` }));
    const scores = (node: RoleProcess) => servingScores(node, pairs);
    let last: { a: number[]; b: number[] } | undefined;
    await waitFor(
      async () => {
        const [a, b] = await Promise.all([scores(s0), scores(s1)]);
        last = { a, b };
        return a.every((x, i) => Math.abs(x - b[i]!) < 1e-6);
      },
      { timeoutMs: 20_000, message: () => `same scores on both serving nodes: ${JSON.stringify(last)}` },
    );
  });
});
