import { MessageChannel } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { HandOffs, isGrouped, PartCalls, partTag, serveParts, type GroupedReply } from '../src/part-calls.js';
import { PortBatch, type PackedFrames } from '../src/port-batch.js';

/** A caller and a server on two ends of a real MessageChannel; `serve` answers each part. */
function link(serve: (tag: number, frame: Uint8Array) => Uint8Array | Promise<Uint8Array> | undefined) {
  const { port1, port2 } = new MessageChannel();
  let posts = 0;
  const calls = new PartCalls((p) => {
    posts++;
    port1.postMessage(p, [p.meta.buffer, p.data.buffer]);
  });
  const replies = new PortBatch((p) => port2.postMessage(p, [p.meta.buffer, p.data.buffer]));
  port2.on('message', (p: PackedFrames) => serveParts(p, serve, replies));
  port1.on('message', (p: PackedFrames) => calls.replies(p));
  return { calls, posts: () => posts, close: () => port1.close() };
}

const bytes = (...b: number[]) => Uint8Array.from(b);

describe('PartCalls groups', () => {
  it("hand one host message's parts for a thread over as one group, replies in place, async ones too", async () => {
    const seen: number[] = [];
    const l = link((tag, frame) => {
      seen.push(tag);
      // a push part answers later (its log write), a part for a shard not here: undefined
      if (tag === partTag(3, 'push')) return Promise.resolve(bytes(frame[0]! + 100));
      if (tag === partTag(9, 'pull')) return undefined;
      return bytes(frame[0]! + 10);
    });
    try {
      const h = new HandOffs();
      const single = l.calls.call(partTag(1, 'pull'), bytes(0));
      const parts = [
        h.add(l.calls, partTag(3, 'push'), bytes(1)),
        h.add(l.calls, partTag(1, 'pull'), bytes(2)),
        h.add(l.calls, partTag(9, 'pull'), bytes(3)),
        h.add(l.calls, partTag(1, 'pull'), bytes(4)),
      ];
      expect(parts.map((p) => p.at)).toEqual([0, 1, 2, 3]);
      expect(h.groups()).toHaveLength(1);
      expect(parts.every((p) => isGrouped(p) && p.group === parts[0]!.group)).toBe(true);
      await Promise.all(h.groups().map((g) => g.done));
      const out = parts.map((p: GroupedReply) => p.group.result![p.at]);
      expect(out.map((f) => f && Array.from(f))).toEqual([[101], [12], undefined, [14]]);
      expect(Array.from((await single)!)).toEqual([10]);
      // the lone call and the group's four parts in one post, served in the order they were added
      expect(l.posts()).toBe(1);
      expect(seen).toEqual([
        partTag(1, 'pull'),
        partTag(3, 'push'),
        partTag(1, 'pull'),
        partTag(9, 'pull'),
        partTag(1, 'pull'),
      ]);
      // a second message's group is a group of its own
      const h2 = new HandOffs();
      const again = [
        h2.add(l.calls, partTag(1, 'pull'), bytes(5)),
        h2.add(l.calls, partTag(1, 'pull'), bytes(6)),
      ];
      expect(again[0]!.group).not.toBe(parts[0]!.group);
      await again[0]!.group.done;
      expect(again.map((p) => Array.from(p.group.result![p.at]!))).toEqual([[15], [16]]);
    } finally {
      l.close();
    }
  });

  it('a group whose thread went away settles with every part unanswered', async () => {
    const l = link(() => new Promise<Uint8Array>(() => undefined)); // never answers
    const h = new HandOffs();
    const parts = [
      h.add(l.calls, partTag(0, 'pull'), bytes(1)),
      h.add(l.calls, partTag(0, 'push'), bytes(2)),
    ];
    const lone = l.calls.call(partTag(0, 'pull'), bytes(3));
    await new Promise((r) => setTimeout(r, 20));
    l.calls.fail();
    await parts[0]!.group.done;
    expect(parts.map((p) => p.group.result![p.at])).toEqual([undefined, undefined]);
    expect(await lone).toBeUndefined();
    l.close();
  });
});
