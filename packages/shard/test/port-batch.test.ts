import { describe, expect, it } from 'vitest';
import { PortBatch, unpackFrames, type PackedFrames } from '../src/port-batch.js';

describe('PortBatch', () => {
  it('posts one packed message per turn; frames come out whole, 8-aligned, absent ones as undefined', async () => {
    const sent: PackedFrames[] = [];
    const b = new PortBatch((p) => sent.push(p));
    const frames = [
      new Uint8Array([1, 2, 3]),
      undefined,
      new Uint8Array(0),
      Uint8Array.from({ length: 21 }, (_, i) => i),
    ];
    frames.forEach((f, i) => b.add(100 + i, 7 * i, f));
    expect(sent).toHaveLength(0); // not before the turn is over
    await new Promise((r) => setImmediate(r));
    expect(sent).toHaveLength(1);
    const out: [number, number, number[] | undefined, number][] = [];
    unpackFrames(sent[0]!, (id, tag, f) => out.push([id, tag, f && Array.from(f), f?.byteOffset ?? 0]));
    expect(out.map(([id, tag, f]) => [id, tag, f])).toEqual(
      frames.map((f, i) => [100 + i, 7 * i, f && Array.from(f)]),
    );
    expect(out.every(([, , , off]) => off % 8 === 0)).toBe(true);
    // the next turn's frames go in a message of their own; a dropped batch sends nothing
    b.add(1, 0, new Uint8Array([9]));
    b.flush();
    b.add(2, 0, new Uint8Array([8]));
    b.drop();
    await new Promise((r) => setImmediate(r));
    expect(sent).toHaveLength(2);
    const second: [number, number[]][] = [];
    unpackFrames(sent[1]!, (id, _t, f) => second.push([id, Array.from(f!)]));
    expect(second).toEqual([[1, [9]]]);
  });
});
