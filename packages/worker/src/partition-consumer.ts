import { DeliverPolicy, type ConsumerConfig, type ConsumerInfo, type JetStreamManager } from 'nats';
import type { WorkerLog } from './worker-types.js';

/** A partition's durable consumer as this version wants it. */
export type PartitionConsumerConfig = Partial<ConsumerConfig> & {
  durable_name: string;
  filter_subject: string;
};

/** What {@link ensurePartitionConsumer} did. */
export type ConsumerOutcome = 'created' | 'kept' | 'migrated' | 'old-filter';

/**
 * Whether a consumer can be recreated without losing or repeating anything: every message it
 * delivered is acked (so the ack floor is its whole position) and nobody is pulling from it.
 * A live partition is rarely so: the joiner holds impressions unacked for the attribution
 * window, and acks above the floor are not listed anywhere, so a consumer recreated at its
 * floor would deliver (and train) them again.
 */
function quiescent(ci: ConsumerInfo): boolean {
  return ci.num_ack_pending === 0 && ci.num_waiting === 0 && ci.num_redelivered === 0;
}

/**
 * Creates a partition's consumer, or brings one made by an older version to this version's
 * filter. A consumer with the same filter and another config (e.g. an older ack wait) is kept:
 * all workers share it.
 *
 * A consumer made before the labels subjects existed filters `fb.<p>` only. nats-server 2.9
 * accepts a filter update but then delivers nothing to the consumer (seen with 2.9.10; 2.10
 * fixes it), so it is recreated instead: deleted and added with the new filter, starting right
 * after its ack floor — only when it is quiescent (above), which is when that floor is its
 * whole acknowledged position. Labels published before the switch (below the floor) are not
 * delivered by the new consumer; republish them if they matter. A consumer that is not
 * quiescent is kept and reported, and the next worker start tries again.
 */
export async function ensurePartitionConsumer(
  jsm: JetStreamManager,
  stream: string,
  cfg: PartitionConsumerConfig,
  feedbackOnly: string,
  /** The partition's labels subject: a stream without it keeps feedback-only consumers. */
  labels: string,
  log: WorkerLog,
): Promise<ConsumerOutcome> {
  const durable = cfg.durable_name;
  const have = await jsm.consumers.info(stream, durable).catch(() => undefined);
  if (!have) {
    try {
      await jsm.consumers.add(stream, cfg);
    } catch {
      // a stream made by other tools without the labels subjects
      await jsm.consumers.add(stream, { ...cfg, filter_subject: feedbackOnly }).catch(() => undefined);
    }
    return 'created';
  }
  if (have.config.filter_subject === cfg.filter_subject) return 'kept';
  // a stream made by other tools without the labels subjects: feedback only is all there is
  const subjects = (await jsm.streams.info(stream)).config.subjects ?? [];
  if (!subjects.includes(labels)) return 'kept';
  // read again right before deleting: another worker starting at the same time may have
  // migrated it already (then it has the new filter and is kept)
  const now = await jsm.consumers.info(stream, durable).catch(() => undefined);
  if (now && now.config.filter_subject === cfg.filter_subject) return 'kept';
  if (!now || !quiescent(now)) {
    log('warn', 'consumer has an older filter and is busy: labels of its partition are not consumed yet', {
      durable,
      filter: have.config.filter_subject,
      want: cfg.filter_subject,
      ackPending: now?.num_ack_pending,
      waiting: now?.num_waiting,
      fix: 'restart the workers once the partition is quiet, or remove the consumer while no worker runs',
    });
    return 'old-filter';
  }
  const start = now.ack_floor.stream_seq + 1;
  const migrated: PartitionConsumerConfig = {
    ...cfg,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: start,
  };
  await jsm.consumers.delete(stream, durable);
  try {
    await jsm.consumers.add(stream, migrated);
  } catch (e) {
    // never leave the partition without a consumer: back to its old filter, same position
    await jsm.consumers.add(stream, { ...migrated, filter_subject: have.config.filter_subject });
    log('warn', 'consumer could not take the new filter; recreated with its old one', {
      durable,
      start,
      error: String(e),
    });
    return 'old-filter';
  }
  log('info', 'consumer recreated with the partition filter (feedback and labels)', {
    durable,
    from: have.config.filter_subject,
    to: cfg.filter_subject,
    startSeq: start,
  });
  return 'migrated';
}
