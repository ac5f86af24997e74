import { describe, expect, it } from 'vitest';
import { AckPolicy } from 'nats';
import { uniqueName, useNats } from '@freshet/testkit';
import { ConfirmedAcks } from '../src/confirmed-acks.js';
import type { DeliveredMsg } from '../src/delivered-msg.js';
import type { WorkerCounters } from '../src/worker-types.js';

const nats = useNats();

async function delivered(n: number) {
  const stream = uniqueName('ca').replace(/[^A-Za-z0-9_-]/g, '');
  const jsm = await nats.nc.jetstreamManager();
  await jsm.streams.add({ name: stream, subjects: [`${stream}.x`] });
  await jsm.consumers.add(stream, { durable_name: 'c', ack_policy: AckPolicy.Explicit });
  const js = nats.nc.jetstream();
  for (let i = 0; i < n; i++) await js.publish(`${stream}.x`, new Uint8Array([i]));
  const msgs: DeliveredMsg[] = [];
  const batch = await (await js.consumers.get(stream, 'c')).fetch({ max_messages: n, expires: 2000 });
  for await (const m of batch) msgs.push(m as DeliveredMsg);
  return { stream, jsm, msgs };
}

function confirmer(giveUpMs: number) {
  const counters = { ackRetries: 0, acksUnconfirmed: 0 } as WorkerCounters;
  const acks = new ConfirmedAcks({
    nc: () => nats.nc,
    timeoutMs: 200,
    giveUpMs,
    signal: new AbortController().signal,
    counters,
    log: () => undefined,
  });
  return { acks, counters };
}

describe('ConfirmedAcks', () => {
  it('resolves true once the consumer processed each ack', async () => {
    const { stream, jsm, msgs } = await delivered(20);
    const { acks, counters } = confirmer(5000);
    const ok = await Promise.all(msgs.map((m) => acks.ack(m)));
    expect(ok.every(Boolean)).toBe(true);
    expect(acks.pending).toBe(0);
    expect(counters).toMatchObject({ ackRetries: 0, acksUnconfirmed: 0 });
    expect((await jsm.consumers.info(stream, 'c')).num_ack_pending).toBe(0);
  });

  it('sends again while no consumer answers, and gives up (false) at its deadline', async () => {
    const { stream, jsm, msgs } = await delivered(3);
    await jsm.consumers.delete(stream, 'c'); // no one answers on the ack subject now (503)
    const { acks, counters } = confirmer(800);
    const t0 = Date.now();
    const ok = await Promise.all(msgs.map((m) => acks.ack(m)));
    expect(ok).toEqual([false, false, false]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
    expect(counters.ackRetries).toBeGreaterThanOrEqual(3 * 2);
    expect(counters.acksUnconfirmed).toBe(3);
    await acks.whenIdle();
  });
});
