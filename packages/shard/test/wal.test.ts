import { readdirSync, statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDirs } from '@freshet/testkit';
import { listSegments, replayWal, truncateWal, Wal, type WalRecord } from '../src/wal.js';

const tempDir = useTempDirs();

describe('write-ahead log', () => {
  it('group-commits concurrent appends, rotates, replays in order and stops at a torn tail', async () => {
    const dir = tempDir('wal');
    const wal = await Wal.open(dir, false);
    const payload = (i: number) => Uint8Array.from({ length: 5 + i }, (_, k) => (i + k) & 255);
    // Ten appends in one turn: one write.
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        wal.append({ kind: 'push', ts: i, tau: i, dcApplied: i === 3, payload: payload(i) }),
      ),
    );
    expect(wal.stats.groupCommits).toBe(1);
    const { sealed, done } = wal.rotate();
    await wal.append({ kind: 'evict', ts: 10, t: 2, keys: Uint32Array.from([7, 8]) });
    await wal.append({ kind: 'seq', ts: 11, seq: 42 });
    await wal.append({ kind: 'push', ts: 12, tau: 0, dcApplied: false, payload: payload(20) });
    await done;
    await wal.close();
    expect(listSegments(dir)).toEqual([sealed, sealed + 1]);

    // Cut the last record in half, as a kill during its write would.
    const last = join(dir, readdirSync(dir).sort().pop()!);
    truncateSync(last, statSync(last).size - 10);
    const got: WalRecord[] = [];
    const r = await replayWal(dir, 0, (rec) => got.push(rec));
    expect(r).toEqual({ segments: 2, records: 12 });
    expect(
      got.slice(0, 10).map((x) => (x.kind === 'push' ? [x.tau, x.dcApplied, Array.from(x.payload)] : x)),
    ).toEqual(Array.from({ length: 10 }, (_, i) => [i, i === 3, Array.from(payload(i))]));
    expect(got[10]).toMatchObject({ kind: 'evict', t: 2 });
    expect(Array.from((got[10] as { keys: Uint32Array }).keys)).toEqual([7, 8]);
    expect(got[11]).toMatchObject({ kind: 'seq', seq: 42 });

    // Segments covered by a checkpoint go away; replay after them sees the rest only.
    await truncateWal(dir, sealed);
    expect(listSegments(dir)).toEqual([sealed + 1]);
  });

  it('with fsync, syncs data and directory entries and still replays', async () => {
    const dir = tempDir('wal');
    const wal = await Wal.open(dir, true);
    await wal.append({ kind: 'seq', ts: 0, seq: 1 });
    const { done } = wal.rotate();
    await wal.append({ kind: 'seq', ts: 0, seq: 2 });
    await done;
    await wal.close();
    const seqs: number[] = [];
    await replayWal(dir, 0, (r) => r.kind === 'seq' && seqs.push(r.seq));
    expect(seqs).toEqual([1, 2]);
  });
});
