import type { NatsConnection } from 'nats';
import { connectNats, natsOptionsFromEnv } from '@freshet/nats';
import { FreshetError, subjects } from '@freshet/protocol';

/** Options every admin command takes to find a cluster. */
export interface AdminFlags {
  nats?: string;
  cluster?: string;
}

/** The NATS URL(s) an admin command uses: --nats, else FRESHET_NATS_URL, else the local default. */
export function natsUrlsFrom(flags: AdminFlags, env: NodeJS.ProcessEnv = process.env): string[] {
  const raw = flags.nats ?? env.FRESHET_NATS_URL ?? 'nats://127.0.0.1:4222';
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * Connects an admin command. Credentials come from FRESHET_NATS_* environment variables (user,
 * password file, creds file, CA); a failure says where it tried and what to do.
 */
export async function connectAdmin(flags: AdminFlags, name: string): Promise<NatsConnection> {
  const servers = natsUrlsFrom(flags);
  try {
    // the admin role's reply inboxes (FRESHET_NATS_INBOX_PREFIX overrides, e.g. for another role)
    const defaults = flags.cluster ? { inboxPrefix: subjects(flags.cluster).inboxPrefix('admin') } : {};
    return await connectNats({ ...natsOptionsFromEnv(), servers }, name, defaults);
  } catch (e) {
    const msg = (e as Error).message;
    const auth = /auth/i.test(msg);
    throw new FreshetError(
      'UNAVAILABLE',
      `cannot connect to NATS at ${servers.join(',')}: ${msg}. ` +
        (auth
          ? 'The server wants credentials: set FRESHET_NATS_NKEY_FILE (or FRESHET_NATS_USER and FRESHET_NATS_PASS_FILE, or FRESHET_NATS_CREDS) for the admin role, and FRESHET_NATS_INBOX_PREFIX to its inbox prefix.'
          : 'Is a cluster running? Start one with `pnpm freshet up`, or pass --nats URL (or set FRESHET_NATS_URL).'),
      { cause: e },
    );
  }
}

/** Runs `fn` with an admin connection that is always closed afterwards. */
export async function withAdmin<T>(
  flags: AdminFlags,
  name: string,
  fn: (nc: NatsConnection) => Promise<T>,
): Promise<T> {
  const nc = await connectAdmin(flags, name);
  try {
    return await fn(nc);
  } finally {
    await nc.close().catch(() => undefined);
  }
}

/** Renders rows as an aligned plain-text table (no colours: it must read well in logs too). */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** Human formatting helpers: `–` for unknown. */
export const fmt = {
  n(v: number | null, digits = 0): string {
    if (v === null) return '–';
    if (Math.abs(v) >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
    if (Math.abs(v) >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
    return v.toFixed(digits);
  },
  bytes(v: number | null): string {
    if (v === null) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB'];
    let x = v;
    let i = 0;
    while (x >= 1024 && i < u.length - 1) {
      x /= 1024;
      i++;
    }
    return `${x.toFixed(i ? 1 : 0)} ${u[i]}`;
  },
  ago(ts: number | null, now = Date.now()): string {
    if (ts === null) return 'never';
    const s = Math.max(0, (now - ts) / 1000);
    if (s < 60) return `${s.toFixed(0)}s ago`;
    if (s < 3600) return `${(s / 60).toFixed(0)}m ago`;
    return `${(s / 3600).toFixed(1)}h ago`;
  },
  ms(v: number | null): string {
    if (v === null) return '–';
    return v >= 1000 ? `${(v / 1000).toFixed(2)}s` : `${v.toFixed(0)}ms`;
  },
};
