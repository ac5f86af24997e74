import { AckPolicy } from 'nats';
import { describe, expect, it } from 'vitest';
import { uniqueName, useNats } from '@freshet/testkit';
import { ConsumerLag } from '../src/consumer-lag.js';

/**
 * The status's consumer lag against a real JetStream consumer: read once per max age, however
 * often status is asked for (the server's API is not polled by every dashboard refresh), and
 * fresh again after that age.
 */
const nats = useNats();

describe('consumer lag', () => {
  it('reads the server at most once per max age, and moves after it', async () => {
    const name = uniqueName('lag').replace(/[^A-Za-z0-9_-]/g, '');
    const jsm = await nats.nc.jetstreamManager();
    await jsm.streams.add({ name, subjects: [`${name}.>`] });
    await jsm.consumers.add(name, { durable_name: 'c', ack_policy: AckPolicy.Explicit });
    const consumer = await nats.nc.jetstream().consumers.get(name, 'c');
    const js = nats.nc.jetstream();
    for (let i = 0; i < 3; i++) await js.publish(`${name}.a`, new Uint8Array([i]));

    let reads = 0;
    const counted = { info: () => (reads++, consumer.info()) } as unknown as typeof consumer;
    const lag = new ConsumerLag(300);
    const first = await Promise.all([0, 1, 2].map(() => lag.read([0], () => counted)));
    expect(first).toEqual([{ '0': 3 }, { '0': 3 }, { '0': 3 }]);
    expect(reads).toBe(1);

    for (let i = 0; i < 2; i++) await js.publish(`${name}.a`, new Uint8Array([i]));
    expect(await lag.read([0], () => counted)).toEqual({ '0': 3 });
    expect(reads).toBe(1);
    await new Promise((r) => setTimeout(r, 350));
    expect(await lag.read([0], () => counted)).toEqual({ '0': 5 });
    expect(reads).toBe(2);
    // a partition given up is not reported; one without a consumer is left out
    expect(await lag.read([], () => counted)).toEqual({});
    await jsm.streams.delete(name);
  });
});
