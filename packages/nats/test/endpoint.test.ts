import { describe, expect, it } from 'vitest';
import { decodeFrame, encodeFrame, FreshetError, throwIfErrorReply } from '@freshet/protocol';
import { useNats, uniqueName } from '@freshet/testkit';
import { frameEndpoint, requestBytes } from '../src/index.js';

describe('frame endpoints over a real nats-server', () => {
  const nats = useNats();

  it('answers, turns thrown errors into envelopes and keeps serving', async () => {
    const subject = uniqueName('ep');
    const ep = frameEndpoint(nats.nc, subject, (data) => {
      const f = decodeFrame(data);
      if ((f.header as { fail?: boolean }).fail) throw new FreshetError('NON_FINITE', 'nan in gradient');
      return encodeFrame({ ok: true });
    });
    const bad = decodeFrame(await requestBytes(nats.nc, subject, encodeFrame({ fail: true })));
    expect(() => throwIfErrorReply(bad)).toThrowError(
      expect.objectContaining({ code: 'NON_FINITE' }) as Error,
    );
    const garbage = decodeFrame(await requestBytes(nats.nc, subject, new Uint8Array([1, 2, 3])));
    expect(() => throwIfErrorReply(garbage)).toThrowError(
      expect.objectContaining({ code: 'BAD_FRAME' }) as Error,
    );
    const good = decodeFrame(await requestBytes(nats.nc, subject, encodeFrame({})));
    expect(good.header).toEqual({ ok: true });
    await ep.drain();
  });

  it('rejects with OVERLOADED beyond maxInFlight instead of queueing', async () => {
    const subject = uniqueName('ep');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const ep = frameEndpoint(
      nats.nc,
      subject,
      async () => {
        await gate;
        return encodeFrame({});
      },
      { maxInFlight: 2 },
    );
    const reqs = [0, 1, 2].map(() => requestBytes(nats.nc, subject, encodeFrame({})));
    const third = decodeFrame(await reqs[2]!);
    expect(() => throwIfErrorReply(third)).toThrowError(
      expect.objectContaining({ code: 'OVERLOADED' }) as Error,
    );
    release();
    await Promise.all(reqs.slice(0, 2));
    await ep.drain();
  });

  it('answers OVERSIZE when its reply is over the server max_payload, and keeps serving', async () => {
    const subject = uniqueName('ep');
    const limit = nats.nc.info!.max_payload;
    const ep = frameEndpoint(nats.nc, subject, (data) =>
      data.length > 1 ? new Uint8Array(limit + 1024) : encodeFrame({ ok: true }),
    );
    const big = decodeFrame(await requestBytes(nats.nc, subject, new Uint8Array(2)));
    expect(() => throwIfErrorReply(big)).toThrowError(expect.objectContaining({ code: 'OVERSIZE' }) as Error);
    const small = decodeFrame(await requestBytes(nats.nc, subject, new Uint8Array(1)));
    expect(small.header).toEqual({ ok: true });
    await ep.drain();
  });

  it('maps no responders to UNAVAILABLE', async () => {
    await expect(
      requestBytes(nats.nc, uniqueName('none'), new Uint8Array(1), { timeoutMs: 1000 }),
    ).rejects.toMatchObject({
      code: 'UNAVAILABLE',
    });
  });
});
