import { nanos, type NatsConnection } from 'nats';
import { encodeEvent, subjects, type Features } from '@freshet/protocol';

/** What the k-th pre-labelled example of {@link publishExamples} holds. */
export interface ExampleShape {
  user?: (k: number) => string;
  label?: (k: number) => number;
  features?: (k: number, user: string) => Features;
  /** JetStream message ids (`e<k>`), so a republish is deduped by the stream. */
  msgId?: boolean;
}

/**
 * Publishes `count` pre-labelled `example` events numbered from `from`, event k to partition
 * k mod `partitions`; JetStream acks awaited in windows of 256.
 */
export async function publishExamples(
  nc: NatsConnection,
  cluster: string,
  from: number,
  count: number,
  partitions: number,
  shape: ExampleShape = {},
): Promise<void> {
  const s = subjects(cluster);
  const js = nc.jetstream();
  let acks: Promise<unknown>[] = [];
  for (let k = from; k < from + count; k++) {
    const user = shape.user?.(k) ?? `u${k}`;
    const ev = encodeEvent({
      v: 1,
      kind: 'example',
      id: `e${k}`,
      ts: Date.now(),
      user,
      label: shape.label?.(k) ?? (k % 3 === 0 ? 1 : 0),
      features: shape.features?.(k, user) ?? { user, item: `i${k % 5}` },
    });
    acks.push(js.publish(s.labels(k % partitions), ev, shape.msgId ? { msgID: `e${k}` } : undefined));
    if (acks.length >= 256) {
      await Promise.all(acks);
      acks = [];
    }
  }
  await Promise.all(acks);
}

const durable = (p: number, prefix: string) => `${prefix}-p${p}`;

/** Unacked (`ackPending`) and undelivered (`pending`) events over the partitions' worker consumers. */
export async function consumerBacklog(
  nc: NatsConnection,
  cluster: string,
  partitions: number,
  prefix = 'freshet-worker',
): Promise<{ ackPending: number; pending: number }> {
  const s = subjects(cluster);
  const jsm = await nc.jetstreamManager();
  let ackPending = 0;
  let pending = 0;
  for (let p = 0; p < partitions; p++) {
    const i = await jsm.consumers.info(s.feedbackStream, durable(p, prefix));
    ackPending += i.num_ack_pending;
    pending += i.num_pending;
  }
  return { ackPending, pending };
}

/** Unacked plus undelivered events over every partition's durable worker consumer. */
export async function outstanding(
  nc: NatsConnection,
  cluster: string,
  partitions: number,
  prefix = 'freshet-worker',
): Promise<number> {
  const b = await consumerBacklog(nc, cluster, partitions, prefix);
  return b.ackPending + b.pending;
}

/**
 * Workers size the consumers' ack wait for their joiners (≥ 15 s): an event whose ack never
 * arrived comes back only after it. Tests shorten it on the shared consumers (after the workers
 * made them) so redeliveries come in seconds.
 */
export async function setAckWait(
  nc: NatsConnection,
  cluster: string,
  partitions: number,
  ms: number,
  prefix = 'freshet-worker',
): Promise<void> {
  const s = subjects(cluster);
  const jsm = await nc.jetstreamManager();
  for (let p = 0; p < partitions; p++) {
    const info = await jsm.consumers.info(s.feedbackStream, durable(p, prefix));
    await jsm.consumers.update(s.feedbackStream, durable(p, prefix), { ...info.config, ack_wait: nanos(ms) });
  }
}
