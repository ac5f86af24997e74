import { findNatsServer, natsServerVersion } from '@freshet/nats';

/** A missing nats-server fails the whole run up front: tests never skip for it. */
export default function setup(): void {
  const bin = findNatsServer();
  console.log(`[freshet] nats-server ${natsServerVersion(bin)} at ${bin}`);
}
