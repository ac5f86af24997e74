import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  adler32,
  buildEventDictionary,
  compressEvent,
  compressedEventDictionary,
  encodeEvent,
  eventDictionaryId,
  isCompressedEvent,
  parseEvent,
  type FeedbackEventInput,
} from '../src/index.js';

// A Criteo-like event (39 features, hashed categoricals as hex) from a seeded generator: the
// shape whose size the dictionary is for.
function criteoLike(k: number): FeedbackEventInput {
  let x = (k + 1) * 2654435761;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31), x / 2 ** 31);
  const features: Record<string, string | number> = {};
  for (let i = 1; i <= 13; i++) if (rnd() > 0.2) features[`I${i}`] = Math.floor(rnd() ** 3 * 500);
  // a few values per column are frequent (as in the logs), the rest are rare
  for (let i = 1; i <= 26; i++) {
    const v = rnd() < 0.6 ? Math.floor(rnd() * 4) * 7919 * i : Math.floor(rnd() * 2 ** 32);
    features[`C${i}`] = (v >>> 0).toString(16).padStart(8, '0');
  }
  return {
    kind: 'example',
    id: `run-${k}`,
    ts: 1_700_000_000_000 + k,
    user: `user-${k}`,
    label: k % 4 === 0 ? 1 : 0,
    features,
  };
}
const now = 1_700_000_000_500;

describe('compressed events', () => {
  const samples = Array.from({ length: 200 }, (_, k) => encodeEvent(criteoLike(10_000 + k), 'msgpack'));
  const dictionary = buildEventDictionary(samples);
  const dictionaries = new Map([[eventDictionaryId(dictionary), dictionary]]);

  it("name their dictionary by zlib's own DICTID and parse back to the same event", () => {
    expect(dictionary.length).toBe(32 * 1024);
    for (const enc of ['json', 'msgpack'] as const) {
      const ev = criteoLike(7);
      const plain = encodeEvent(ev, enc);
      const packed = compressEvent(plain, { dictionary });
      expect(isCompressedEvent(packed)).toBe(true);
      expect(compressedEventDictionary(packed)).toBe(eventDictionaryId(dictionary));
      // zlib (not this module) wrote that id: it is the Adler-32 zlib computed
      const byZlib = deflateSync(plain, { dictionary });
      expect(byZlib.readUInt32BE(2)).toBe(adler32(dictionary));
      const same = parseEvent(plain, { now });
      expect(same.ok).toBe(true);
      expect(parseEvent(packed, { now, dictionaries })).toEqual(same);
      // without a dictionary too
      expect(parseEvent(compressEvent(plain), { now })).toEqual(same);
    }
  });

  it('are much smaller with a dictionary of sample events', () => {
    let raw = 0;
    let zlibOnly = 0;
    let withDict = 0;
    for (let k = 0; k < 100; k++) {
      const plain = encodeEvent(criteoLike(k), 'msgpack');
      raw += plain.length;
      zlibOnly += compressEvent(plain).length;
      withDict += compressEvent(plain, { dictionary }).length;
    }
    expect(zlibOnly).toBeLessThan(raw);
    expect(withDict).toBeLessThan(0.6 * raw);
    expect(withDict).toBeLessThan(0.75 * zlibOnly);
  });

  it('are dead-lettered with a reason when they cannot be read', () => {
    const plain = encodeEvent(criteoLike(3), 'msgpack');
    const packed = compressEvent(plain, { dictionary });
    expect(parseEvent(packed, { now })).toMatchObject({ ok: false, reason: 'UNKNOWN_DICTIONARY' });
    expect(parseEvent(packed.slice(0, 20), { now, dictionaries })).toMatchObject({
      ok: false,
      reason: 'BAD_ENCODING',
    });
    const flipped = packed.slice();
    flipped[flipped.length - 1]! ^= 0xff; // the Adler-32 of the content
    expect(parseEvent(flipped, { now, dictionaries })).toMatchObject({ ok: false, reason: 'BAD_ENCODING' });
    // a small payload that inflates past the event limit is refused, not allocated
    const bomb = compressEvent(new Uint8Array(10 * 1024 * 1024));
    expect(bomb.length).toBeLessThan(64 * 1024);
    expect(parseEvent(bomb, { now })).toMatchObject({ ok: false, reason: 'OVERSIZE' });
    // compressed garbage: inflates, then fails as what it is
    expect(parseEvent(compressEvent(new TextEncoder().encode('not an event')), { now })).toMatchObject({
      ok: false,
      reason: 'BAD_JSON',
    });
  });

  it('are never confused with JSON or msgpack events', () => {
    for (let k = 0; k < 50; k++) {
      const ev = criteoLike(k);
      expect(isCompressedEvent(encodeEvent(ev, 'json'))).toBe(false);
      expect(isCompressedEvent(encodeEvent(ev, 'msgpack'))).toBe(false);
    }
    expect(isCompressedEvent(new TextEncoder().encode(' \n{"kind":"click"}'))).toBe(false);
  });

  it("come from other languages' zlib as well (Python's zdict)", () => {
    const plain = encodeEvent(criteoLike(11), 'json');
    const script =
      'import sys, zlib\n' +
      'd = open(sys.argv[1], "rb").read()\n' +
      'c = zlib.compressobj(level=6, zdict=d)\n' +
      'sys.stdout.buffer.write(c.compress(sys.stdin.buffer.read()) + c.flush())\n';
    const dir = mkdtempSync(join(tmpdir(), 'freshet-dict-'));
    const path = join(dir, 'dict.bin');
    writeFileSync(path, dictionary);
    let fromPython: Uint8Array;
    try {
      fromPython = new Uint8Array(execFileSync('python3', ['-c', script, path], { input: plain }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(compressedEventDictionary(fromPython)).toBe(eventDictionaryId(dictionary));
    expect(parseEvent(fromPython, { now, dictionaries })).toEqual(parseEvent(plain, { now }));
  });
});
