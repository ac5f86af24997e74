import { ErrorCode as NatsErrorCode, NatsError, type NatsConnection } from 'nats';
import { FreshetError } from '@freshet/protocol';

export interface RequestOptions {
  timeoutMs?: number;
  signal?: AbortSignal | undefined;
}

/** Maps NATS client errors onto Freshet codes so callers handle one error type. */
export function fromNatsError(err: unknown, subject: string): FreshetError {
  if (err instanceof FreshetError) return err;
  if (err instanceof NatsError) {
    // NatsError.code is a plain string; compare against the enum's string values.
    const code = err.code as string;
    const is = (c: NatsErrorCode) => code === (c as string);
    if (is(NatsErrorCode.NoResponders)) {
      return new FreshetError('UNAVAILABLE', `no responders on ${subject}`, { cause: err });
    }
    if (is(NatsErrorCode.Timeout))
      return new FreshetError('TIMEOUT', `timeout on ${subject}`, { cause: err });
    if (is(NatsErrorCode.ConnectionClosed) || is(NatsErrorCode.Disconnect)) {
      return new FreshetError('UNAVAILABLE', `connection closed (${subject})`, { cause: err });
    }
    if (is(NatsErrorCode.MaxPayloadExceeded)) {
      return new FreshetError('OVERSIZE', `payload over the server's max_payload (${subject})`, {
        cause: err,
      });
    }
  }
  return new FreshetError('INTERNAL', `${subject}: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
  });
}

/** Request-reply of raw bytes with Freshet errors and AbortSignal support. */
export async function requestBytes(
  nc: NatsConnection,
  subject: string,
  data: Uint8Array,
  opts: RequestOptions = {},
): Promise<Uint8Array> {
  if (opts.signal?.aborted) throw new FreshetError('SHUTTING_DOWN', `aborted before request on ${subject}`);
  const req = nc.request(subject, data, { timeout: opts.timeoutMs ?? 5000 });
  if (!opts.signal) {
    try {
      return (await req).data;
    } catch (e) {
      throw fromNatsError(e, subject);
    }
  }
  // An abort does not cancel the in-flight request; it stops waiting for it.
  const signal = opts.signal;
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(new FreshetError('SHUTTING_DOWN', `aborted waiting on ${subject}`));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return (await Promise.race([req, aborted])).data;
  } catch (e) {
    throw fromNatsError(e, subject);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
    req.catch(() => undefined);
  }
}
