import { describe, expect, it } from 'vitest';
import { RowStore } from '../src/row-store.js';

function rng(seed: number) {
  let s = seed;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

describe('RowStore', () => {
  it('finds, grows through incremental rehash, removes and reuses rows', () => {
    const s = new RowStore({ dim: 4, stateDim: 8, chunkRows: 64, initialSlots: 16 });
    const r = rng(7);
    const n = 20_000;
    const keys = new Uint32Array(2 * n);
    const rows = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      keys[2 * i] = r();
      keys[2 * i + 1] = i % 3; // many keys share hi: the index must mix both halves
      rows[i] = s.insert(keys[2 * i]!, keys[2 * i + 1]!, 5);
      s.chunkF(rows[i]!)[s.valueOffset(rows[i]!)] = i;
      // Every key inserted so far stays findable while migrations run.
      if (i % 997 === 0)
        for (let j = 0; j <= i; j += 101) expect(s.find(keys[2 * j]!, keys[2 * j + 1]!)).toBe(rows[j]);
    }
    expect(s.size).toBe(n);
    for (let i = 0; i < n; i++) {
      const row = s.find(keys[2 * i]!, keys[2 * i + 1]!);
      expect(row).toBe(rows[i]);
      expect(s.chunkF(row)[s.valueOffset(row)]).toBe(i);
    }
    expect(s.find(12345, 999)).toBe(-1);
    // Remove every other key; the rest stay reachable (backward-shift deletion keeps chains intact).
    for (let i = 0; i < n; i += 2) s.remove(rows[i]!);
    expect(s.size).toBe(n / 2);
    for (let i = 0; i < n; i++) {
      expect(s.find(keys[2 * i]!, keys[2 * i + 1]!)).toBe(i % 2 === 0 ? -1 : rows[i]);
    }
    // Freed rows are reused, not appended.
    const end = s.end;
    for (let i = 0; i < 100; i++) s.insert(0xdead0000 + i, 7, 5);
    expect(s.end).toBe(end);
    expect(s.find(0xdead0000 + 42, 7)).toBeGreaterThanOrEqual(0);
  });

  it('restores from copied chunks with the same rows', () => {
    const a = new RowStore({ dim: 2, stateDim: 0, chunkRows: 8 });
    for (let i = 0; i < 50; i++) a.insert(i * 7919, i, 3);
    a.remove(a.find(7 * 7919, 7));
    const b = new RowStore({ dim: 2, stateDim: 0, chunkRows: 8 });
    b.restore(a.copyChunks(), a.end);
    expect(b.size).toBe(49);
    expect(b.find(7 * 7919, 7)).toBe(-1);
    for (let i = 0; i < 50; i++) if (i !== 7) expect(b.find(i * 7919, i)).toBe(a.find(i * 7919, i));
  });

  it('snapshots copy-on-write: the snapshot keeps values from before later writes', () => {
    const s = new RowStore({ dim: 1, stateDim: 0, chunkRows: 4 });
    const rows = Array.from({ length: 16 }, (_, i) => s.insert(100 + i, 0, 1));
    const setW = (r: number, x: number) => (s.chunkF(r)[s.valueOffset(r)] = x);
    rows.forEach((r) => setW(r, 1));
    s.beginSnapshot();
    // Writers call the store's hooks first (setLastSeen / insert / remove), as the apply path does.
    s.setLastSeen(rows[1]!, 9);
    setW(rows[1]!, 2);
    s.remove(rows[5]!);
    s.insert(999, 0, 1); // reuses row 5's id
    expect(s.snapshotStep(0)).toBeUndefined(); // chunks 2 and 3 not copied yet
    s.setLastSeen(rows[9]!, 9);
    setW(rows[9]!, 3);
    const snap = s.snapshotStep(100)!;
    expect(snap.end).toBe(16);
    const fresh = new RowStore({ dim: 1, stateDim: 0, chunkRows: 4 });
    fresh.restore(snap.chunks, snap.end);
    expect(fresh.size).toBe(16);
    expect(fresh.find(999, 0)).toBe(-1);
    for (let i = 0; i < 16; i++) {
      const r = fresh.find(100 + i, 0);
      expect(fresh.chunkF(r)[fresh.valueOffset(r)]).toBe(1);
      expect(fresh.lastSeen(r)).toBe(1);
    }
    expect(s.chunkF(rows[9]!)[s.valueOffset(rows[9]!)]).toBe(3);
  });

  it('stays under 220 bytes per row for dim 16 with Adam state (actual allocations)', () => {
    const s = new RowStore({ dim: 16, stateDim: 32 });
    const r = rng(3);
    const n = 1 << 18;
    for (let i = 0; i < n; i++) s.insert(r(), r(), 1);
    expect(s.migrating).toBe(false);
    expect(s.bytes / s.size).toBeLessThanOrEqual(220);
  });
});
