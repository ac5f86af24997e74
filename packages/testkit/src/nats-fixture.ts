import { afterAll, beforeAll } from 'vitest';
import type { NatsConnection } from 'nats';
import {
  connectNats,
  startNatsCluster,
  startNatsServer,
  type NatsClusterHandle,
  type NatsServerHandle,
  type NatsServerOptions,
} from '@freshet/nats';

export interface NatsFixture {
  readonly server: NatsServerHandle;
  readonly url: string;
  /** A connection opened for the test file, closed after it. */
  readonly nc: NatsConnection;
  /** Opens another connection, closed with the fixture. */
  connect(name?: string): Promise<NatsConnection>;
}

/**
 * Registers beforeAll/afterAll hooks that run a real nats-server with JetStream for the test
 * file. Teardown runs also when tests fail or time out; a missing nats-server fails the file.
 */
export function useNats(options: NatsServerOptions = {}): NatsFixture {
  let server: NatsServerHandle | undefined;
  let nc: NatsConnection | undefined;
  const extra: NatsConnection[] = [];
  beforeAll(async () => {
    server = await startNatsServer(options);
    nc = await connectNats({ servers: server.url }, 'freshet-test');
  });
  afterAll(async () => {
    await Promise.allSettled([...extra, ...(nc ? [nc] : [])].map((c) => c.close()));
    await server?.stop();
  });
  const need = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`${what} used outside a test (beforeAll has not run)`);
    return v;
  };
  return {
    get server() {
      return need(server, 'server');
    },
    get url() {
      return need(server, 'server').url;
    },
    get nc() {
      return need(nc, 'nc');
    },
    async connect(name = 'freshet-test') {
      const c = await connectNats({ servers: need(server, 'server').url }, name);
      extra.push(c);
      return c;
    },
  };
}

/** Like {@link useNats} with a route-clustered set of servers (default 3) on loopback. */
export function useNatsCluster(
  size = 3,
  options: Omit<NatsServerOptions, 'cluster' | 'port' | 'serverName'> = {},
) {
  let cluster: NatsClusterHandle | undefined;
  beforeAll(async () => {
    cluster = await startNatsCluster(size, options);
  });
  afterAll(async () => {
    await cluster?.stop();
  });
  return {
    get cluster(): NatsClusterHandle {
      if (!cluster) throw new Error('cluster used outside a test');
      return cluster;
    },
  };
}
