import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { DeadLetters, DeadLetterStore, ensureStream } from '@freshet/client';
import { subjects } from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import { cliMainPath } from '../src/local-cluster.js';

// `freshet dlq` against a real nats-server: dead letters stored the way workers store them
// (DeadLetters, with reason and source headers), then listed and counted by reason, shown,
// replayed onto their source subject (and deleted once stored), and purged — through the
// built CLI, as an operator runs it.

const nats = useNats();
const run = promisify(execFile);
const enc = new TextEncoder();

async function cli(...args: string[]): Promise<string> {
  const r = await run(process.execPath, [cliMainPath, 'dlq', ...args, '--nats', nats.url], {
    encoding: 'utf8',
    env: { ...process.env, FRESHET_NATS_URL: '' },
  });
  return r.stdout;
}

async function seeded() {
  const cluster = uniqueName('dlq');
  const s = subjects(cluster);
  await ensureStream(nats.nc, { cluster, partitions: 2, storage: 'memory' });
  const dl = new DeadLetters(nats.nc, { cluster, maxPayloadBytes: 128 });
  const event = (id: string) =>
    enc.encode(
      JSON.stringify({ v: 1, kind: 'click', id, ts: Date.now(), user: 'u', request: 'r', item: 'i' }),
    );
  await dl.send(
    event('a'),
    { reason: 'RATE_LIMITED', message: 'over the limit' },
    { subject: s.feedback(0), seq: 11 },
  );
  await dl.send(
    event('b'),
    { reason: 'RATE_LIMITED', message: 'over the limit' },
    { subject: s.feedback(1), seq: 12 },
  );
  await dl.send(
    enc.encode('{"kind":"example"}'),
    { reason: 'FORBIDDEN_KIND', message: 'labels only' },
    {
      subject: s.feedback(0),
      seq: 13,
    },
  );
  await dl.send(
    enc.encode('x'.repeat(200)),
    { reason: 'OVERSIZE', message: 'too big' },
    { subject: s.feedback(1), seq: 14 },
  );
  // a dead letter naming another subject must never be published there
  await dl.send(
    event('c'),
    { reason: 'RATE_LIMITED', message: 'forged source' },
    { subject: 'freshet.other.fb.0', seq: 15 },
  );
  return { cluster, s };
}

describe('freshet dlq', () => {
  it('lists counts by reason and the newest entries; shows one with its payload', async () => {
    const { cluster, s } = await seeded();
    const list = JSON.parse(await cli('list', '--cluster', cluster, '--json')) as {
      messages: number;
      byReason: Record<string, number>;
      entries: Array<{ seq: number; reason: string; source: string }>;
    };
    expect(list.messages).toBe(5);
    expect(list.byReason).toEqual({ RATE_LIMITED: 3, FORBIDDEN_KIND: 1, OVERSIZE: 1 });
    expect(list.entries.map((e) => e.reason)).toEqual([
      'RATE_LIMITED',
      'RATE_LIMITED',
      'FORBIDDEN_KIND',
      'OVERSIZE',
      'RATE_LIMITED',
    ]);
    const text = await cli('list', '--cluster', cluster, '--reason', 'FORBIDDEN_KIND');
    expect(text).toMatch(/5 dead letter\(s\).*RATE_LIMITED 3/);
    expect(text).toContain(`${s.feedback(0)}#13`);
    const shown = JSON.parse(await cli('show', '3', '--cluster', cluster, '--json')) as Record<
      string,
      unknown
    >;
    expect(shown).toMatchObject({
      seq: 3,
      reason: 'FORBIDDEN_KIND',
      source: s.feedback(0),
      payload: '{"kind":"example"}',
    });
    await expect(cli('show', '99', '--cluster', cluster)).rejects.toThrow(/no dead letter 99/);
    await expect(cli('list', '--cluster', cluster, '--reason', 'NOPE')).rejects.toThrow(/--reason NOPE/);
  });

  it('replays onto the source subject and deletes what it replayed; skips truncated and foreign ones', async () => {
    const { cluster, s } = await seeded();
    const jsm = await nats.nc.jetstreamManager();
    const before = (await jsm.streams.info(s.feedbackStream)).state.messages;
    const dry = JSON.parse(
      await cli('replay', '--cluster', cluster, '--reason', 'RATE_LIMITED', '--dry-run', '--json'),
    ) as {
      replayed: number;
    };
    expect(dry, JSON.stringify(dry)).toMatchObject({ replayed: 2 });
    expect((await jsm.streams.info(s.feedbackStream)).state.messages).toBe(before);

    const r = JSON.parse(await cli('replay', '--cluster', cluster, '--json')) as {
      replayed: number;
      skipped: Array<{ seq: number; why: string }>;
    };
    expect(r.replayed).toBe(3); // two RATE_LIMITED, one FORBIDDEN_KIND
    expect(r.skipped.map((x) => x.seq).sort()).toEqual([4, 5]);
    expect(r.skipped.find((x) => x.seq === 4)?.why).toMatch(/truncated/);
    expect(r.skipped.find((x) => x.seq === 5)?.why).toMatch(
      /not a feedback or labels subject of this cluster/,
    );
    const fb = await jsm.streams.info(s.feedbackStream, { subjects_filter: '>' });
    expect(fb.state.messages).toBe(before + 3);
    expect(fb.state.subjects).toMatchObject({ [s.feedback(0)]: 2, [s.feedback(1)]: 1 });
    const store = await DeadLetterStore.open(nats.nc, cluster);
    expect((await store.summary()).byReason).toEqual({ OVERSIZE: 1, RATE_LIMITED: 1 });
    // replaying again finds nothing new to replay
    expect((await store.replay()).replayed).toBe(0);
  });

  it('purges by reason, then all, only with --yes', async () => {
    const { cluster } = await seeded();
    expect(await cli('purge', '--cluster', cluster, '--reason', 'RATE_LIMITED')).toMatch(/would delete 3/);
    const store = await DeadLetterStore.open(nats.nc, cluster);
    expect((await store.summary()).messages).toBe(5);
    expect(await cli('purge', '--cluster', cluster, '--reason', 'RATE_LIMITED', '--yes')).toMatch(
      /deleted 3/,
    );
    expect((await store.summary()).byReason).toEqual({ FORBIDDEN_KIND: 1, OVERSIZE: 1 });
    expect(await cli('purge', '--cluster', cluster, '--yes')).toMatch(/deleted 2/);
    expect((await store.summary()).messages).toBe(0);
  });
});
