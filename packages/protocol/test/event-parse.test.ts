import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { encodeEvent, parseEvent, partitionOf, type DeadLetterReason } from '../src/index.js';

const now = 1_700_000_000_000;
const te = new TextEncoder();
const good = { id: 'e1', ts: now, user: 'u1', kind: 'click', request: 'r1', item: 'i1' };
const json = (o: unknown) => te.encode(JSON.stringify(o));

describe('parseEvent', () => {
  it('accepts every kind as JSON and msgpack, applying defaults', () => {
    const events = [
      { ...good, kind: 'impression', position: 2, query: 'red shoes', features: { ctx: 'mobile', f: 0.5 } },
      good,
      { ...good, kind: 'conversion', value: 12.5 },
      { id: 'e4', ts: now, user: 'u1', kind: 'rating', item: 'i1', rating: 4.5 },
      { ...good, kind: 'dwell', ms: 31_000 },
      { ...good, kind: 'skip' },
      { id: 'e7', ts: now, user: 'u1', kind: 'example', label: 1, features: { tok: ['a', 'b'] } },
    ];
    for (const e of events) {
      for (const enc of ['json', 'msgpack'] as const) {
        const r = parseEvent(encodeEvent(e as never, enc), { now });
        expect(r.ok, `${e.kind}/${enc}: ${JSON.stringify(r)}`).toBe(true);
        if (r.ok) {
          expect(r.event.kind).toBe(e.kind);
          expect(r.event.v).toBe(1);
        }
      }
    }
    const ex = parseEvent(json(events[6]), { now });
    expect(ex.ok && ex.event.kind === 'example' && ex.event.weight).toBe(1);
  });

  const cases: [string, Uint8Array, DeadLetterReason][] = [
    ['malformed JSON', te.encode('{"id": "e1", "ts": '), 'BAD_JSON'],
    ['not an object', te.encode('[1,2,3]'), 'BAD_TYPE'],
    ['JSON array of objects', te.encode('  [{"a":1}]'), 'BAD_TYPE'],
    ['plain text', te.encode('hello'), 'BAD_JSON'],
    ['invalid UTF-8', new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), 'BAD_ENCODING'],
    ['binary garbage', new Uint8Array([0x01, 0x02, 0x03]), 'BAD_ENCODING'],
    ['broken msgpack', new Uint8Array([0x85, 0xa2, 0x69]), 'BAD_ENCODING'],
    ['wrong type (ts string)', json({ ...good, ts: 'yesterday' }), 'BAD_TYPE'],
    [
      'wrong type (features object)',
      json({ ...good, kind: 'impression', features: { a: { b: 1 } } }),
      'BAD_TYPE',
    ],
    ['missing id', json({ ...good, id: undefined }), 'MISSING_FIELD'],
    ['empty user id', json({ ...good, user: '' }), 'MISSING_FIELD'],
    ['missing request', json({ ...good, request: undefined }), 'MISSING_FIELD'],
    ['missing kind', json({ ...good, kind: undefined }), 'MISSING_FIELD'],
    ['unknown kind', json({ ...good, kind: 'purchase' }), 'UNKNOWN_KIND'],
    ['bare NaN token', te.encode('{"id":"e1","ts":NaN,"user":"u","kind":"click"}'), 'NON_FINITE'],
    ['bare -Infinity', te.encode('{"id":"e1","kind":"dwell","ms":-Infinity}'), 'NON_FINITE'],
    ['1e999 overflows', te.encode('{"id":"e1","ts":1e999,"user":"u","kind":"click"}'), 'NON_FINITE'],
    [
      'msgpack NaN feature',
      encodeEvent({ ...good, kind: 'impression', features: { x: NaN } } as never, 'msgpack'),
      'NON_FINITE',
    ],
    ['huge string', json({ ...good, kind: 'impression', query: 'q'.repeat(5000) }), 'OVERSIZE'],
    ['huge id', json({ ...good, user: 'u'.repeat(500) }), 'OVERSIZE'],
    [
      'huge token list',
      json({ ...good, kind: 'impression', features: { t: Array(1000).fill('a') } }),
      'OVERSIZE',
    ],
    ['huge payload', json({ ...good, pad: 'x'.repeat(100_000) }), 'OVERSIZE'],
    ['too far in the future', json({ ...good, ts: now + 3600_000 }), 'TS_FUTURE'],
    ['too far in the past', json({ ...good, ts: now - 30 * 24 * 3600_000 }), 'TS_PAST'],
    ['unsupported version', json({ ...good, v: 2 }), 'UNSUPPORTED_VERSION'],
    ['out of range', json({ id: 'e', ts: now, user: 'u', kind: 'rating', item: 'i', rating: 99 }), 'INVALID'],
    [
      'deep nesting',
      te.encode('{"kind":"click","x":' + '['.repeat(5000) + ']'.repeat(5000) + '}'),
      'BAD_TYPE',
    ],
  ];
  it.each(cases)('rejects %s', (_name, bytes, reason) => {
    const r = parseEvent(bytes, { now, maxBytes: 64 * 1024 });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.reason).toBe(reason);
      expect(r.message.length).toBeGreaterThan(0);
    }
  });

  it('honours maxAgeMs: Infinity for replays that keep original timestamps', () => {
    const old = json({ ...good, ts: 880_000_000_000 });
    expect(parseEvent(old, { now }).ok).toBe(false);
    expect(parseEvent(old, { now, maxAgeMs: Infinity }).ok).toBe(true);
  });

  it('rejects msgpack that is not a map', () => {
    const r = parseEvent(new Packr().pack([1, 2]), { now, encoding: 'msgpack' });
    expect(r.ok ? undefined : r.reason).toBe('BAD_TYPE');
  });
});

describe('partitionOf', () => {
  it('is stable and spreads users', () => {
    expect(partitionOf('alice', 16)).toBe(partitionOf('alice', 16));
    expect(partitionOf('anyone', 1)).toBe(0);
    const counts = new Array<number>(8).fill(0);
    for (let i = 0; i < 8000; i++) counts[partitionOf(`user-${i}`, 8)]!++;
    for (const c of counts) expect(c).toBeGreaterThan(800);
    expect(() => partitionOf('x', 0)).toThrow(/partitions/);
  });
});
