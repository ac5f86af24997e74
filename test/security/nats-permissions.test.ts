import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureStream } from '@freshet/client';
import {
  authorizationBlock,
  generateNatsAuth,
  natsRoles,
  writeAuthFiles,
  type GeneratedAuth,
  type NatsRole,
} from '@freshet/cli';
import {
  connectNats,
  freePort,
  routeUrl,
  startNatsCluster,
  startNatsServer,
  type NatsClusterHandle,
  type NatsServerHandle,
} from '@freshet/nats';
import { adminSubjects, subjects } from '@freshet/protocol';
import { uniqueName, useTempDirs, waitFor } from '@freshet/testkit';

type NatsConnection = Awaited<ReturnType<typeof connectNats>>;

// The permission matrix of the generated NATS auth, against a real 3-node cluster: every role
// (and a foreign cluster's admin) × every subject family, publish and subscribe, each cell
// asserted by what the servers do — a message an unrestricted observer sees (publish allowed) or
// one the role receives (subscribe allowed), versus the permission violation the server reports.
// Roles connect to different nodes than the observer, so every allowed cell crosses a route.
// Then: an uncredentialed client is refused, and a nats-server without the route secret cannot
// join as a route (while one with it can: the positive control that shows the test would see it).

const cluster = uniqueName('sec').replace(/-/g, '_');
const foreign = uniqueName('sec').replace(/-/g, '_');
const s = subjects(cluster);
const a = adminSubjects(cluster);
const observerPass = randomBytes(18).toString('base64url');
let auth: GeneratedAuth;
let foreignAuth: GeneratedAuth;
let nats: NatsClusterHandle;
let observer: NatsConnection;
const conns: NatsConnection[] = [];
const extraServers: NatsServerHandle[] = [];
const tempDir = useTempDirs();
let seedDir: string;
let foreignSeedDir: string;

type Row = NatsRole | 'foreign-admin';
const rows: Row[] = [...natsRoles, 'foreign-admin'];

/**
 * One concrete subject per family and who may publish (`pub`) and subscribe (`sub`) there.
 * Written out by hand, not derived from rolePermissions: it is the specification the generated
 * permissions are checked against.
 */
interface Family {
  name: string;
  subject: string;
  pub: Row[];
  sub: Row[];
}
const all = (...r: Row[]) => r;
const families = (): Family[] => {
  const fb = s.feedbackStream;
  return [
    {
      name: 'feedback',
      subject: s.feedback(0),
      pub: all('publisher', 'labeller', 'admin'),
      sub: all('admin'),
    },
    { name: 'labels', subject: s.labels(0), pub: all('labeller', 'admin'), sub: all('admin') },
    { name: 'dead letters', subject: s.deadLetter, pub: all('worker', 'admin'), sub: all('admin') },
    { name: 'pull', subject: s.pull(0), pub: all('worker', 'admin'), sub: all('shard', 'admin') },
    { name: 'push', subject: s.push(0), pub: all('worker', 'admin'), sub: all('shard', 'admin') },
    { name: 'snapshot', subject: s.snapshot(0), pub: all('serving', 'admin'), sub: all('shard', 'admin') },
    {
      name: 'shard status',
      subject: `${s.prefix}.ps.0.status`,
      pub: all('worker', 'serving', 'admin'),
      sub: all('shard', 'admin'),
    },
    { name: 'deltas', subject: s.delta(0), pub: all('shard', 'admin'), sub: all('serving', 'admin') },
    { name: 'score', subject: s.score, pub: all('app', 'admin'), sub: all('serving', 'admin') },
    { name: 'rank', subject: s.rank, pub: all('app', 'admin'), sub: all('serving', 'admin') },
    {
      name: 'worker clocks',
      subject: s.workerClock('w1'),
      pub: all('worker', 'admin'),
      sub: all('worker', 'shard', 'admin'),
    },
    {
      name: 'worker status',
      subject: `${s.prefix}.worker.w1.status`,
      pub: all('admin'),
      sub: all('worker', 'admin'),
    },
    {
      name: 'admin command (shard)',
      subject: a.command('shard', 'shard-0', 'checkpoint'),
      pub: all('admin'),
      sub: all('shard', 'admin'),
    },
    {
      name: 'admin command (worker)',
      subject: a.command('worker', 'w1', 'drain'),
      pub: all('admin'),
      sub: all('worker', 'admin'),
    },
    {
      name: 'service API',
      subject: '$SRV.PING',
      // account-wide: a foreign admin on the same server sees actors' status (not their data)
      pub: all('admin', 'foreign-admin'),
      sub: all('worker', 'shard', 'serving'),
    },
    {
      name: 'JetStream info',
      subject: '$JS.API.INFO',
      pub: all('publisher', 'labeller', 'worker', 'shard', 'serving', 'admin', 'foreign-admin'),
      sub: all(),
    },
    {
      name: 'feedback stream info',
      subject: `$JS.API.STREAM.INFO.${fb}`,
      pub: all('publisher', 'labeller', 'worker', 'admin'),
      sub: all(),
    },
    {
      name: 'feedback consumer create',
      subject: `$JS.API.CONSUMER.CREATE.${fb}.probe`,
      pub: all('worker', 'admin'),
      sub: all(),
    },
    { name: 'feedback acks', subject: `$JS.ACK.${fb}.probe`, pub: all('worker', 'admin'), sub: all() },
    {
      name: 'dead-letter stream info',
      subject: `$JS.API.STREAM.INFO.${s.deadLetterStream}`,
      pub: all('admin'),
      sub: all(),
    },
    {
      name: "another stream's management",
      subject: `$JS.API.STREAM.DELETE.FRESHET_FB_${foreign.toUpperCase()}`,
      pub: all('foreign-admin'),
      sub: all(),
    },
    {
      name: 'KV bucket',
      subject: `$KV.${s.kvBucket}.probe`,
      pub: all('worker', 'shard', 'admin'),
      sub: all(),
    },
    {
      name: 'KV stream use',
      subject: `$JS.API.STREAM.INFO.KV_${s.kvBucket}`,
      pub: all('worker', 'shard', 'serving', 'admin'),
      sub: all(),
    },
    { name: 'object store', subject: `$O.${s.objectStore}.probe`, pub: all('shard', 'admin'), sub: all() },
    ...natsRoles.map((r) => ({
      name: `${r} inbox`,
      subject: `${s.inboxPrefix(r)}.probe`,
      pub: all(),
      sub: all(r),
    })),
    { name: 'default inbox', subject: '_INBOX.probe', pub: all(), sub: all() },
    {
      name: "foreign cluster's feedback",
      subject: subjects(foreign).feedback(0),
      pub: all('foreign-admin'),
      sub: all('foreign-admin'),
    },
    {
      name: "foreign cluster's admin inbox",
      subject: `${subjects(foreign).inboxPrefix('admin')}.probe`,
      pub: all(),
      sub: all('foreign-admin'),
    },
  ];
};

interface Probe {
  conn: NatsConnection;
  /** Permission violations the server reported, as `publish <subject>` / `subscription <subject>`. */
  denied: Set<string>;
}
const probes = new Map<Row, Probe>();

async function connectAs(row: Row, server: number): Promise<Probe> {
  const [dir, role, cred] =
    row === 'foreign-admin'
      ? [foreignSeedDir, 'admin', foreignAuth.users.admin]
      : [seedDir, row, auth.users[row]];
  const conn = await connectNats(
    {
      servers: nats.servers[server]!.url,
      nkeySeedFile: join(dir, `${role}.nk`),
      inboxPrefix: cred.inboxPrefix,
    },
    `matrix-${row}`,
  );
  conns.push(conn);
  const denied = new Set<string>();
  void (async () => {
    for await (const st of conn.status()) {
      const ctx = (st as { permissionContext?: { operation: string; subject: string } }).permissionContext;
      if (ctx) denied.add(`${ctx.operation} ${ctx.subject}`);
    }
  })();
  return { conn, denied };
}

const observed = new Set<string>();

beforeAll(async () => {
  auth = generateNatsAuth({ cluster });
  foreignAuth = generateNatsAuth({ cluster: foreign });
  seedDir = join(tempDir('sec'), 'auth');
  foreignSeedDir = join(tempDir('sec'), 'auth');
  await writeAuthFiles(seedDir, auth);
  await writeAuthFiles(foreignSeedDir, foreignAuth);
  const observerEntry = `{ user: "observer", password: ${JSON.stringify(observerPass)} }`;
  nats = await startNatsCluster(3, {
    extraConfig: authorizationBlock([...auth.entries, ...foreignAuth.entries, observerEntry]),
  });
  observer = await connectNats(
    { servers: nats.servers[0]!.url, user: 'observer', pass: observerPass },
    'observer',
  );
  conns.push(observer);
  observer.subscribe('>', {
    callback: (_e, m) => {
      const text = new TextDecoder().decode(m.data);
      if (text.startsWith('probe:')) observed.add(text);
    },
  });
  await observer.flush();
  // real streams and buckets behind the JetStream subjects, made by the admin role itself
  const admin = await connectAs('admin', 1);
  // (a fresh cluster elects its JetStream meta leader first: retry until it answers)
  await waitFor(
    () =>
      ensureStream(admin.conn, { cluster, partitions: 2, replicas: 3, storage: 'memory' }).then(
        () => true,
        () => false,
      ),
    { timeoutMs: 45_000, intervalMs: 500, message: 'JetStream ready on the 3-node cluster' },
  );
  // roles on nodes 1 and 2, the observer on node 0
  for (const [i, row] of rows.entries())
    probes.set(row, row === 'admin' ? admin : await connectAs(row, 1 + (i % 2)));
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(conns.map((c) => c.close()));
  await Promise.allSettled(extraServers.map((x) => x.stop()));
  await nats?.stop();
});

type Outcome = 'allowed' | 'denied';

/** Publishes once as `row` and waits for the observer to see it or the server to deny it. */
async function publishCell(row: Row, subject: string): Promise<Outcome> {
  const p = probes.get(row)!;
  const tag = `probe:pub:${row}:${subject}:${randomBytes(4).toString('hex')}`;
  p.conn.publish(subject, new TextEncoder().encode(tag));
  return waitFor(
    () => (observed.has(tag) ? 'allowed' : p.denied.has(`publish ${subject}`) ? 'denied' : undefined),
    {
      timeoutMs: 15_000,
      intervalMs: 10,
      message: () => `publish ${row} → ${subject}: neither seen nor denied`,
    },
  );
}

/** Subscribes as `row`; the observer publishes until the role receives it or the server denies it. */
async function subscribeCell(row: Row, subject: string): Promise<Outcome> {
  const p = probes.get(row)!;
  const tag = `probe:sub:${row}:${subject}:${randomBytes(4).toString('hex')}`;
  let got = false;
  const sub = p.conn.subscribe(subject, {
    callback: (err, m) => {
      if (!err && new TextDecoder().decode(m.data) === tag) got = true;
    },
  });
  try {
    return await waitFor(
      () => {
        if (got) return 'allowed';
        if (p.denied.has(`subscription ${subject}`)) return 'denied';
        // interest travels over the routes asynchronously: publish again until it arrives
        observer.publish(subject, new TextEncoder().encode(tag));
        return undefined;
      },
      {
        timeoutMs: 15_000,
        intervalMs: 25,
        message: () => `subscribe ${row} → ${subject}: neither got nor denied`,
      },
    );
  } finally {
    if (!sub.isClosed()) sub.unsubscribe();
  }
}

describe('NATS permission matrix on a 3-node cluster', () => {
  it('every role × every subject family, publish and subscribe, is exactly as specified', async () => {
    const fams = families();
    const mismatches: string[] = [];
    let cells = 0;
    // one family at a time, every row at once (each row on its own connection)
    for (const f of fams) {
      await Promise.all(
        rows.map(async (row) => {
          const pub = await publishCell(row, f.subject);
          const sub = await subscribeCell(row, f.subject);
          cells += 2;
          const wantPub: Outcome = f.pub.includes(row) ? 'allowed' : 'denied';
          const wantSub: Outcome = f.sub.includes(row) ? 'allowed' : 'denied';
          if (pub !== wantPub)
            mismatches.push(`${row} publish ${f.name} (${f.subject}): ${pub}, want ${wantPub}`);
          if (sub !== wantSub)
            mismatches.push(`${row} subscribe ${f.name} (${f.subject}): ${sub}, want ${wantSub}`);
        }),
      );
    }
    expect(mismatches).toEqual([]);
    expect(cells).toBe(fams.length * rows.length * 2);
    // no connection was dropped by a violation: the matrix ran on the same connections
    for (const [row, p] of probes) expect(p.conn.isClosed(), row).toBe(false);
  }, 240_000);

  it('refuses a client without credentials, and one with an unknown key; seeds are private', async () => {
    for (const server of nats.servers) {
      await expect(connectNats({ servers: server.url }, 'anonymous')).rejects.toThrow(/authorization/i);
    }
    const strangerDir = join(tempDir('sec'), 'auth');
    await writeAuthFiles(strangerDir, generateNatsAuth({ cluster }));
    await expect(
      connectNats({ servers: nats.servers[0]!.url, nkeySeedFile: join(strangerDir, 'admin.nk') }, 'stranger'),
    ).rejects.toThrow(/authorization/i);
    // the server config holds public keys only; the seed files and their directory are private
    expect(auth.config).not.toContain(auth.users.admin.seed.slice(2));
    expect((await stat(seedDir)).mode & 0o777).toBe(0o700);
    for (const f of ['auth.conf', ...natsRoles.map((r) => `${r}.nk`)]) {
      expect((await stat(join(seedDir, f))).mode & 0o777, f).toBe(0o600);
    }
  });

  it('keeps a server without the route secret out of the cluster; one with it joins', async () => {
    const peers = nats.routePorts.map((p) => ({ host: '127.0.0.1', port: p }));
    // both open to anonymous clients: whatever reaches them came over a route
    const rogue = await startNatsServer({
      jetstream: false,
      serverName: 'rogue',
      cluster: {
        name: nats.name,
        port: await freePort(),
        routes: peers.map((r) => routeUrl(r.host, r.port)),
      },
    });
    const friend = await startNatsServer({
      jetstream: false,
      serverName: 'friend',
      cluster: {
        name: nats.name,
        port: await freePort(),
        routes: peers.map((r) => routeUrl(r.host, r.port, nats.routeAuth)),
        auth: nats.routeAuth,
      },
    });
    extraServers.push(rogue, friend);
    const spy = await connectNats({ servers: rogue.url }, 'rogue-spy');
    const ally = await connectNats({ servers: friend.url }, 'friend-spy');
    conns.push(spy, ally);
    const seen = { rogue: 0, friend: 0 };
    spy.subscribe('>', { callback: () => seen.rogue++ });
    ally.subscribe('>', { callback: () => seen.friend++ });
    await Promise.all([spy.flush(), ally.flush()]);
    const admin = probes.get('admin')!.conn;
    // traffic until the friend has seen plenty of it (its route is up and its interest known)
    await waitFor(
      () => {
        admin.publish(s.feedback(1), new TextEncoder().encode('{}'));
        return seen.friend >= 20;
      },
      {
        timeoutMs: 30_000,
        intervalMs: 50,
        message: () => `the credentialed route never carried traffic (${JSON.stringify(seen)})`,
      },
    );
    expect(seen.rogue).toBe(0);
    // and the rogue's anonymous client cannot reach the cluster's actors either
    await expect(
      spy.request(a.command('shard', 'shard-0', 'checkpoint'), new Uint8Array(), { timeout: 1000 }),
    ).rejects.toThrow(/no responders|timeout/i);
  }, 60_000);
});
