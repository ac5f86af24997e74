import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A TCP link between NATS clients and a real nats-server that can lose chosen client messages,
 * as a server that dies with them in flight (or a consumer leader being re-elected) does.
 * It parses the client→server protocol just enough to find message boundaries (PUB/HPUB carry
 * a payload) and drops the publishes whose subject the predicate picks; everything else, and
 * the whole server→client direction, passes through untouched.
 */
export interface LossyLink {
  /** `nats://127.0.0.1:<port>`: connect clients here. */
  url: string;
  /** Publishes dropped so far. */
  readonly dropped: number;
  /** Starts dropping client publishes whose subject (and reply subject) the predicate picks. */
  drop(pick: (subject: string, reply: string | undefined) => boolean): void;
  /** Stops dropping. */
  heal(): void;
  close(): Promise<void>;
}

const CRLF = Buffer.from('\r\n');

export async function startLossyLink(serverUrl: string): Promise<LossyLink> {
  const target = new URL(serverUrl.replace(/^nats:/, 'http:'));
  let pick: ((subject: string, reply: string | undefined) => boolean) | undefined;
  let dropped = 0;
  const sockets = new Set<Socket>();

  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client);
    sockets.add(upstream);
    let buf: Buffer = Buffer.alloc(0);
    upstream.pipe(client);
    client.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const out: Buffer[] = [];
      for (;;) {
        const eol = buf.indexOf(CRLF);
        if (eol < 0) break;
        const line = buf.subarray(0, eol).toString('latin1');
        const parts = line.split(' ').filter((p) => p.length > 0);
        const op = parts[0]?.toUpperCase();
        let end = eol + 2;
        let subject: string | undefined;
        let reply: string | undefined;
        if (op === 'PUB' || op === 'HPUB') {
          // PUB <subject> [reply] <bytes> | HPUB <subject> [reply] <hdr bytes> <total bytes>
          const total = Number(parts.at(-1));
          const args = parts.length - (op === 'PUB' ? 2 : 3);
          subject = parts[1];
          reply = args === 2 ? parts[2] : undefined;
          end = eol + 2 + total + 2;
          if (buf.length < end) break; // payload not all here yet
        }
        const frame = buf.subarray(0, end);
        buf = buf.subarray(end);
        if (subject !== undefined && pick?.(subject, reply)) dropped++;
        else out.push(frame);
      }
      if (out.length > 0) upstream.write(Buffer.concat(out));
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', close);
    upstream.on('close', close);
    client.on('error', close);
    upstream.on('error', close);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `nats://127.0.0.1:${port}`,
    get dropped() {
      return dropped;
    },
    drop(p) {
      pick = p;
    },
    heal() {
      pick = undefined;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
