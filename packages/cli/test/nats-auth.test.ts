import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import { ensureStream } from '@freshet/client';
import {
  EventDictionaries,
  putEventDictionary,
  readModelSpec,
  startNatsServer,
  writeModelSpec,
  type NatsServerHandle,
} from '@freshet/nats';
import {
  adminSubjects,
  decodeEncoderStats,
  encodeEncoderStats,
  encoderStatsKey,
  encoderStatsKeyPrefix,
  subjects,
} from '@freshet/protocol';
import { uniqueName, waitFor } from '@freshet/testkit';
import { compileClusterConfig } from '../src/cluster-config.js';
import { initCluster, modelSpecOfConfig } from '../src/cluster-init.js';
import { authorizationBlock, generateNatsAuth, type GeneratedAuth, type NatsRole } from '../src/nats-auth.js';

// Two clusters on one server, each with generated per-role users: the publisher of cluster one
// is the attacker. Every denial is paired with the same action by a role allowed to do it, so
// the test fails if permissions are too tight as well as too loose.
const c1 = uniqueName('sec').replace(/-/g, '_');
const c2 = uniqueName('sec').replace(/-/g, '_');
let server: NatsServerHandle;
let a1: GeneratedAuth;
let a2: GeneratedAuth;
const conns: NatsConnection[] = [];

async function as(auth: GeneratedAuth, role: NatsRole): Promise<NatsConnection> {
  const { seed, inboxPrefix } = auth.users[role];
  const nc = await connect({
    servers: server.url,
    authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)),
    inboxPrefix,
    name: `${auth.cluster}-${role}`,
  });
  conns.push(nc);
  return nc;
}

/** Collects the permission violations the server reports to a connection. */
function violations(nc: NatsConnection): string[] {
  const out: string[] = [];
  void (async () => {
    for await (const s of nc.status()) {
      const ctx = (s as { permissionContext?: { operation: string; subject: string } }).permissionContext;
      const text = `${typeof s.data === 'string' ? s.data : ''} ${ctx?.operation ?? ''} ${ctx?.subject ?? ''}`;
      if (/permission/i.test(text)) out.push(text);
    }
  })();
  return out;
}

beforeAll(async () => {
  a1 = generateNatsAuth({ cluster: c1 });
  a2 = generateNatsAuth({ cluster: c2 });
  server = await startNatsServer({ extraConfig: authorizationBlock([...a1.entries, ...a2.entries]) });
  for (const a of [a1, a2]) {
    const admin = await as(a, 'admin');
    await ensureStream(admin, { cluster: a.cluster, partitions: 2, storage: 'memory' });
  }
});
afterAll(async () => {
  await Promise.allSettled(conns.map((c) => c.close()));
  await server?.stop();
});

describe('generated NATS auth', () => {
  it('needs credentials at all', async () => {
    await expect(connect({ servers: server.url })).rejects.toThrow(/auth/i);
    // another key than the one the server knows (the server config holds public keys only)
    const stranger = new TextEncoder().encode(generateNatsAuth({ cluster: c1 }).users.publisher.seed);
    await expect(
      connect({ servers: server.url, authenticator: nkeyAuthenticator(stranger) }),
    ).rejects.toThrow(/auth/i);
    expect(a1.config).not.toContain(a1.users.publisher.seed);
  });

  it('lets a publisher publish feedback into its own stream', async () => {
    const pub = await as(a1, 'publisher');
    const ack = await pub.jetstream().publish(subjects(c1).feedback(0), new TextEncoder().encode('{}'));
    expect(ack.stream).toBe(subjects(c1).feedbackStream);
  });

  it("lets a publisher store event dictionaries in its cluster and a worker read them; not the cluster's KV, not another cluster's", async () => {
    const dictionary = new TextEncoder().encode('{"kind":"impression","features":{"C1":"68fd1e64"}}');
    const pub = await as(a1, 'publisher');
    const id = await putEventDictionary(pub, c1, dictionary);
    const worker = await as(a1, 'worker');
    const dicts = new EventDictionaries(worker, c1);
    expect(await dicts.fetch(id)).toBe(true);
    expect(Buffer.from(dicts.get(id)!).equals(Buffer.from(dictionary))).toBe(true);
    await expect(putEventDictionary(pub, c2, dictionary)).rejects.toThrow(/Permissions Violation/);
    const kv = await pub.jetstream().views.kv(subjects(c1).kvBucket, { bindOnly: true });
    await expect(kv.put('model-spec', '{}')).rejects.toThrow(/Permissions Violation/);
  });

  it('does not let a publisher push gradients; a worker may', async () => {
    const s = subjects(c1);
    const shard = await as(a1, 'shard');
    let received = 0;
    shard.subscribe(s.push(0), { callback: (_e, m) => (received++, m.respond(new Uint8Array([1]))) });
    await shard.flush();
    const pub = await as(a1, 'publisher');
    await expect(pub.request(s.push(0), new Uint8Array([9]), { timeout: 2000 })).rejects.toThrow(
      `Permissions Violation for Publish to "${s.push(0)}"`,
    );
    expect(received).toBe(0);
    const worker = await as(a1, 'worker');
    expect([...(await worker.request(s.push(0), new Uint8Array([9]), { timeout: 2000 })).data]).toEqual([1]);
    expect(received).toBe(1);
  });

  it("does not let a publisher read its own or another cluster's stream; a worker reads only its own", async () => {
    const pub = await as(a1, 'publisher');
    const seen = violations(pub);
    pub.subscribe(subjects(c2).feedbackAll);
    pub.subscribe(subjects(c1).feedbackAll);
    await waitFor(() => seen.filter((v) => / subscription /.test(v)).length >= 2, {
      message: () => `two subscribe violations; got ${seen.join(' | ')}`,
    });
    expect(seen.join('\n')).toContain(`subscription ${subjects(c2).feedbackAll}`);
    expect(seen.join('\n')).toContain(`subscription ${subjects(c1).feedbackAll}`);
    const pubJsm = await pub.jetstreamManager({ checkAPI: false });
    await expect(pubJsm.consumers.add(subjects(c2).feedbackStream, { durable_name: 'x' })).rejects.toThrow(
      /Permissions Violation/,
    );

    const worker = await as(a1, 'worker');
    const jsm = await worker.jetstreamManager({ checkAPI: false });
    expect((await jsm.streams.info(subjects(c1).feedbackStream)).config.name).toBe(
      subjects(c1).feedbackStream,
    );
    await expect(jsm.streams.info(subjects(c2).feedbackStream)).rejects.toThrow(/Permissions Violation/);
    await expect(jsm.consumers.add(subjects(c2).feedbackStream, { durable_name: 'steal' })).rejects.toThrow(
      /Permissions Violation/,
    );
    // ...while its own stream's consumers are open to it.
    const own = await jsm.consumers.add(subjects(c1).feedbackStream, { durable_name: 'w1' });
    expect(own.name).toBe('w1');
  });

  it("lets a worker write its encoder statistics and serving watch them; not another cluster's serving", async () => {
    const worker = await as(a1, 'worker');
    const wkv = await worker.jetstream().views.kv(subjects(c1).kvBucket, { bindOnly: true });
    const record = encodeEncoderStats({
      v: 1,
      worker: 'w1',
      at: Date.now(),
      stats: { x: { n: 2, mean: 1, m2: 2 } },
    });
    await wkv.put(encoderStatsKey('w1'), record);

    const serving = await as(a1, 'serving');
    const skv = await serving.jetstream().views.kv(subjects(c1).kvBucket, { bindOnly: true });
    const watch = await skv.watch({ key: `${encoderStatsKeyPrefix}.>` });
    for await (const e of watch) {
      expect(decodeEncoderStats(e.value).stats.x).toEqual({ n: 2, mean: 1, m2: 2 });
      break;
    }
    watch.stop();

    const other = await as(a2, 'serving');
    const okv = await other.jetstream().views.kv(subjects(c1).kvBucket, { bindOnly: true });
    await expect(okv.watch({ key: `${encoderStatsKeyPrefix}.>` })).rejects.toThrow(
      /Permissions Violation|timeout/i,
    );
  });

  it('lets its admin run `freshet init` and a shard read the model spec; not a publisher write it', async () => {
    const cfg = compileClusterConfig({
      cluster: c1,
      nats: { embedded: 0, urls: [server.url] },
      partitions: 2,
      stream: { storage: 'memory' },
    });
    const report = await initCluster(await as(a1, 'admin'), cfg);
    expect(report.modelSpec.result).toBe('created');
    const spec = modelSpecOfConfig(cfg);
    expect(await readModelSpec(await as(a1, 'shard'), c1)).toEqual({ state: 'present', spec });
    await expect(writeModelSpec(await as(a1, 'publisher'), c1, spec)).rejects.toThrow(
      /Permissions Violation|timeout/i,
    );
  });

  it('does not let a publisher (or another cluster’s admin) call an admin command; its admin may', async () => {
    const cmd = adminSubjects(c1).command('shard', 'shard-0', 'checkpoint');
    const shard = await as(a1, 'shard');
    let received = 0;
    shard.subscribe(adminSubjects(c1).role('shard'), {
      callback: (_e, m) => (received++, m.respond(new TextEncoder().encode('{"ok":true}'))),
    });
    await shard.flush();
    for (const [auth, role] of [
      [a1, 'publisher'],
      [a2, 'admin'],
      [a1, 'serving'],
    ] as const) {
      const nc = await as(auth, role);
      await expect(nc.request(cmd, new Uint8Array(), { timeout: 2000 })).rejects.toThrow(
        `Permissions Violation for Publish to "${cmd}"`,
      );
    }
    expect(received).toBe(0);
    const admin = await as(a1, 'admin');
    expect(
      new TextDecoder().decode((await admin.request(cmd, new Uint8Array(), { timeout: 2000 })).data),
    ).toBe('{"ok":true}');
    expect(received).toBe(1);
  });

  it('does not let a publisher query the service API (cluster status is for admins)', async () => {
    const pub = await as(a1, 'publisher');
    await expect(pub.request('$SRV.PING', new Uint8Array(), { timeout: 2000 })).rejects.toThrow(
      'Permissions Violation for Publish to "$SRV.PING"',
    );
  });
});
