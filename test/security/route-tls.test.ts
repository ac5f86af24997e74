import { mkdtemp, rm } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import {
  freePort,
  routeUrl,
  startNatsCluster,
  startNatsServer,
  type NatsServerHandle,
  type RouteTls,
} from '@freshet/nats';
import { cliMainPath, compileClusterConfig, startLocalCluster } from '@freshet/cli';
import { subjects } from '@freshet/protocol';
import { uniqueName, waitFor, writeRouteCerts } from '@freshet/testkit';

// Route (cluster) TLS with real nats-servers and openssl-made certificates: three nodes, each
// with its own certificate from one CA, form their routes over mutual TLS; a fourth server that
// knows the route secret but presents a certificate from another CA, or none, is refused,
// while one with a certificate from the cluster's CA joins (so the refusals are the
// certificate's doing).

const stops: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
});

async function routez(s: NatsServerHandle): Promise<{ num_routes: number; routes: { rid: number }[] }> {
  const r = await fetch(`${s.monitorUrl!}/routez`);
  return (await r.json()) as { num_routes: number; routes: { rid: number }[] };
}

/**
 * A TLS handshake with a route port, as a route would (the CA's certificate): the certificate
 * the server presents and the INFO it then sends inside TLS.
 */
function routeHandshake(port: number, tls: RouteTls): Promise<{ cn: string; info: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({
      port,
      host: '127.0.0.1',
      ca: readFileSync(tls.caFile),
      cert: readFileSync(tls.certFile),
      key: readFileSync(tls.keyFile),
    });
    let buf = '';
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n');
      if (end < 0) return;
      const cn = String(sock.getPeerCertificate().subject.CN);
      sock.destroy();
      resolve({ cn, info: JSON.parse(buf.slice(5, end)) as Record<string, unknown> });
    });
    sock.on('error', reject);
  });
}

describe('route TLS', () => {
  it('a 3-node cluster routes over mutual TLS; a route without the CA’s certificate is refused', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freshet-route-tls-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    const certs = writeRouteCerts(dir, 4);
    const [stranger] = writeRouteCerts(dir, 1, 'stranger');
    const cluster = await startNatsCluster(3, { routeTls: certs.slice(0, 3), monitorPort: 0 });
    stops.push(() => cluster.stop());

    for (const s of cluster.servers) {
      await waitFor(async () => (await routez(s)).num_routes === 2, {
        timeoutMs: 20_000,
        message: `${s.url} routed to both peers`,
      });
    }
    // the route ports speak TLS only, and each node presents its own certificate
    for (const [i, p] of cluster.routePorts.entries()) {
      const h = await routeHandshake(p, certs[3]!);
      expect(h.cn).toBe(`route-${i}`);
      expect(h.info.tls_required).toBe(true);
    }

    // a fourth server with the route secret; only its TLS differs
    let joiners = 0;
    const join4 = async (tls: RouteTls | undefined) => {
      const s = await startNatsServer({
        monitorPort: 0,
        jetstream: false,
        serverName: `joiner-${++joiners}`,
        cluster: {
          name: cluster.name,
          port: await freePort('127.0.0.1'),
          routes: [routeUrl('127.0.0.1', cluster.routePorts[0]!, cluster.routeAuth)],
          auth: cluster.routeAuth,
          ...(tls ? { tls } : {}),
        },
      });
      stops.push(() => s.stop());
      return s;
    };
    const before = (await routez(cluster.servers[0]!)).num_routes;
    const foreign = await join4(stranger);
    const plain = await join4(undefined);
    // the server retries its route every second: give it several tries
    await new Promise((r) => setTimeout(r, 4000));
    expect((await routez(foreign)).num_routes).toBe(0);
    expect((await routez(plain)).num_routes).toBe(0);
    expect((await routez(cluster.servers[0]!)).num_routes).toBe(before);

    // the control: the cluster CA's fourth certificate joins
    const member = await join4(certs[3]);
    await waitFor(async () => (await routez(member)).num_routes >= 1, {
      timeoutMs: 20_000,
      message: 'a server with the CA’s certificate joins',
    });
  }, 90_000);

  it('`freshet config auth --route-tls`: one certificate for every route host, and a cluster.conf that requires it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freshet-route-tls-cli-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    const out = join(dir, 'secrets');
    const cli = (...args: string[]) =>
      execFileSync(
        process.execPath,
        [cliMainPath, 'config', 'auth', '--cluster', 'prod', '--out', out, ...args],
        {
          encoding: 'utf8',
          stdio: 'pipe',
        },
      );
    expect(() => cli('--route-tls')).toThrow(/--route-tls needs --routes/);
    const stdout = cli('--routes', '127.0.0.1:6222,localhost:6223', '--route-tls', '--route-tls-dir', out);
    expect(stdout).toMatch(/route-ca.key issues more certificates/);
    for (const f of ['route.key', 'route-ca.key', 'cluster.conf'])
      expect(statSync(join(out, f)).mode & 0o077).toBe(0);
    expect(readdirSync(out).filter((f) => /\.(csr|cnf)$/.test(f))).toEqual([]); // scratch files removed
    const conf = readFileSync(join(out, 'cluster.conf'), 'utf8');
    const tls: RouteTls = {
      certFile: join(out, 'route.pem'),
      keyFile: join(out, 'route.key'),
      caFile: join(out, 'route-ca.pem'),
    };
    for (const f of Object.values(tls)) expect(conf).toContain(JSON.stringify(f));
    expect(conf).toMatch(/verify: true/);
    const secret = /password: "([^"]+)"/.exec(conf)?.[1];
    expect(secret).toBeTruthy();

    // three servers with the route secret and that one certificate route to each other over TLS
    const cluster = await startNatsCluster(3, {
      routeTls: [tls, tls, tls],
      routeAuth: { user: 'route', password: secret! },
      monitorPort: 0,
    });
    stops.push(() => cluster.stop());
    for (const s of cluster.servers) {
      await waitFor(async () => (await routez(s)).num_routes === 2, {
        timeoutMs: 20_000,
        message: `${s.url} routed to both peers with the CLI's certificate`,
      });
    }
    const h = await routeHandshake(cluster.routePorts[0]!, tls);
    expect(h.cn).toBe('route');
    expect(h.info.tls_required).toBe(true);
  }, 90_000);

  it('`freshet up` with 3 embedded servers: routes over TLS with nats.routeTls (default beyond loopback)', async () => {
    expect(compileClusterConfig({ nats: { embedded: 3 } }).nats.routeTls).toBe(false);
    expect(compileClusterConfig({ nats: { embedded: 3, host: '0.0.0.0' } }).nats.routeTls).toBe(true);
    expect(() => compileClusterConfig({ nats: { embedded: 1, routeTls: true } })).toThrow(/embedded: 3/);

    const dir = await mkdtemp(join(tmpdir(), 'freshet-route-tls-up-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    const cfg = compileClusterConfig({
      cluster: uniqueName('rtls').replace(/[^A-Za-z0-9_-]/g, ''),
      dataDir: join(dir, 'data'),
      nats: { embedded: 3, routeTls: true },
      shards: { count: 1 },
      workers: { count: 0 },
      serving: { count: 0 },
    });
    const lc = await startLocalCluster(cfg, { stopGraceMs: 2000 });
    stops.push(() => lc.stop());
    const certs = join(dir, 'data', 'nats-route-tls');
    const tls: RouteTls = {
      certFile: join(certs, 'route.pem'),
      keyFile: join(certs, 'route.key'),
      caFile: join(certs, 'route-ca.pem'),
    };
    expect(lc.natsRoutePorts).toHaveLength(3);
    for (const p of lc.natsRoutePorts) expect((await routeHandshake(p, tls)).info.tls_required).toBe(true);
    // the routes formed: the launcher's replicated stream has its three replicas
    const jsm = await lc.nc.jetstreamManager();
    const info = await jsm.streams.info(subjects(cfg.cluster).feedbackStream);
    expect(info.config.num_replicas).toBe(3);
    expect(info.cluster?.replicas?.length).toBe(2);
  }, 120_000);
});
