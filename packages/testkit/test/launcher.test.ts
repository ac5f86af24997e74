import { readFileSync, statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { connectNats } from '@freshet/nats';
import { startNatsCluster, startNatsServer, waitFor } from '../src/index.js';

describe('nats-server launcher', () => {
  it('starts JetStream on a free port, restarts after kill -9 with its store, and stops', async () => {
    const s = await startNatsServer();
    try {
      const nc = await connectNats({ servers: s.url }, 'launcher-test');
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({ name: 'T', subjects: ['t.>'] });
      await nc.jetstream().publish('t.x', new Uint8Array([1]));
      s.kill('SIGKILL');
      await waitFor(() => !s.running, { message: 'server to die' });
      await s.restart();
      const info = await waitFor(async () => (await nc.jetstreamManager()).streams.info('T'), {
        message: 'stream after restart',
      });
      expect(info.state.messages).toBe(1);
      await nc.close();
    } finally {
      await s.stop();
    }
    expect(s.running).toBe(false);
  });

  it('forms a 3-node cluster with replicated streams, routes authenticated, monitor on loopback', async () => {
    const c = await startNatsCluster(3, { monitorPort: 0 });
    try {
      // every node has its two peers as routes, which present the generated route secret
      for (const s of c.servers) {
        expect(s.monitorUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
        const routes = await waitFor(
          async () => {
            const r = (await (await fetch(`${s.monitorUrl}/routez`)).json()) as { num_routes: number };
            return r.num_routes >= 2 ? r.num_routes : undefined;
          },
          { message: `${s.name}: two routes` },
        );
        expect(routes).toBe(2);
        const conf = readFileSync(s.configFile, 'utf8');
        expect(conf).toContain(
          `authorization { user: "route", password: ${JSON.stringify(c.routeAuth.password)}`,
        );
        expect(statSync(s.configFile).mode & 0o777).toBe(0o600);
      }
      const nc = await connectNats({ servers: c.urls }, 'cluster-test');
      const info = await waitFor(
        async () =>
          (await nc.jetstreamManager({ timeout: 2000 })).streams.add({
            name: 'R',
            subjects: ['r.>'],
            num_replicas: 3,
          }),
        { timeoutMs: 30_000, message: 'a replicated stream (JetStream meta leader elected)' },
      );
      expect(info.config.num_replicas).toBe(3);
      await nc.close();
    } finally {
      await c.stop();
    }
  });
});
