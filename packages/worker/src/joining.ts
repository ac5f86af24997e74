import type { Example } from '@freshet/model';
import type { EventDictionaries } from '@freshet/nats';
import {
  compressedEventDictionary,
  parseEvent,
  type compileParseOptions,
  type FeedbackEvent,
} from '@freshet/protocol';
import type { DeliveredMsg } from './delivered-msg.js';
import type { ForgottenUsers } from './forgotten-users.js';
import type { JoinedExample, JoinerDropReason } from './joiner.js';
import type { MessageHolds } from './message-holds.js';
import type { ServedCtr } from './served-ctr.js';
import type { Buffered, PartitionState, Tracked, WorkerCounters } from './worker-types.js';

export interface JoiningContext {
  holds: MessageHolds;
  counters: WorkerCounters;
  parseOpts: ReturnType<typeof compileParseOptions>;
  /** Whether a stream subject is one of the labels subjects (where `example` events belong). */
  isLabels: (subject: string) => boolean;
  /** Buffers an example for batching (it takes a hold on each of its messages). */
  enqueue: (b: Omit<Buffered, 'at'>) => void;
  /** Compressed events' dictionaries (the same object `parseOpts` reads). */
  dictionaries?: EventDictionaries;
  /** How long a handed-back event waits before it is delivered again. */
  nakDelayMs?: number;
  /** Users deleted with `freshet user forget`: their events are acked unused and counted. */
  forgotten?: ForgottenUsers;
  /** Served CTR per model (impressions carrying `meta.servedBy`). */
  served?: ServedCtr;
}

/** Admission of fetched messages: validation, joining, and which messages the joiner holds. */
export class Joining {
  constructor(private readonly ctx: JoiningContext) {}

  admit(m: DeliveredMsg, ps: PartitionState): void {
    const { counters, holds } = this.ctx;
    if (ps.applied.has(m.seq)) {
      // its example is applied already (our ack of it was lost or is still unconfirmed, or a
      // batch recovered from an earlier owner's manifest applied it)
      counters.appliedRedeliveries++;
      void holds.ackApplied(m, ps);
      return;
    }
    const known = ps.tracked.get(m.seq);
    if (known) {
      // JetStream redelivered a message we still hold (its ack wait ran out): keep the newer
      // delivery's handle for the ack, and do not feed the event twice.
      known.msg = m;
      known.since = Date.now();
      counters.redelivered++;
      return;
    }
    const dictionary = compressedEventDictionary(m.data);
    if (dictionary !== undefined && this.ctx.dictionaries?.pending(dictionary)) {
      // its dictionary is being fetched (publishers store theirs before their first event, so
      // this is a new one's first moments): hand the event back; one the bucket does not hold
      // is parsed, and dead-lettered UNKNOWN_DICTIONARY, instead of waiting forever
      m.nak(this.ctx.nakDelayMs);
      counters.dictionaryWaits++;
      return;
    }
    ps.caughtUp = m.info.pending === 0;
    const t: Tracked = {
      msg: m,
      seq: m.seq,
      part: ps,
      refs: 1,
      nak: false,
      applied: false,
      since: Date.now(),
    };
    ps.tracked.set(m.seq, t);
    const r = parseEvent(m.data, this.ctx.parseOpts);
    if (!r.ok) {
      holds.deadLetter(t, r.reason, r.message);
      holds.release(t);
      return;
    }
    const ev = r.event;
    const forgotten = this.ctx.forgotten;
    if (forgotten?.has(ev.user)) {
      forgotten.droppedEvents++;
      holds.release(t);
      return;
    }
    if (ev.kind === 'example' && !this.ctx.isLabels(m.subject)) {
      // only the labeller role may publish to the labels subjects (NATS permissions); an example
      // on a feedback subject would let any publisher set labels and bypass the click limits
      holds.deadLetter(t, 'FORBIDDEN_KIND', 'example events are accepted on the labels subjects only');
      holds.release(t);
      return;
    }
    if (ev.kind === 'example') {
      // pre-labelled: no join; not deduped by id (JetStream's message-id dedupe covers publishers)
      const ex: Example = { features: ev.features, label: ev.label, weight: ev.weight, ts: ev.ts };
      this.ctx.enqueue({
        partition: ps.partition,
        example: ex,
        deps: [t],
        key: String(t.seq),
        joined: false,
      });
      holds.release(t);
      return;
    }
    this.join(ps, t, ev);
    holds.release(t);
  }

  private join(ps: PartitionState, t: Tracked, ev: FeedbackEvent): void {
    let dropped: JoinerDropReason | undefined;
    const out = ps.joiner.push(ev, (reason) => (dropped = reason));
    // a dropped duplicate has the id of the event the joiner holds: the original stays the holder
    if (dropped === undefined && !ps.retained.has(ev.id) && ps.joiner.retains(ev)) {
      t.refs++;
      ps.retained.set(ev.id, t);
    }
    this.emitJoined(ps, out, ev.id, t);
    if (dropped === 'RATE_LIMITED') {
      this.ctx.holds.deadLetter(t, 'RATE_LIMITED', `user ${ev.user} over the positive-signal rate limit`);
    } else if (dropped !== undefined || (out.length === 0 && !ps.retained.has(ev.id))) {
      this.ctx.counters.ignored++;
    }
  }

  /** Buffers joined examples, each holding the messages it came from until it is applied. */
  emitJoined(ps: PartitionState, out: JoinedExample[], curId?: string, cur?: Tracked): void {
    for (const ex of out) {
      this.ctx.served?.record(ex);
      const deps: Tracked[] = [];
      const freed: string[] = [];
      const ids =
        ex.impressionId !== undefined && ex.impressionId !== ex.eventId
          ? [ex.impressionId, ex.eventId]
          : [ex.eventId];
      for (const id of ids) {
        const held = ps.retained.get(id);
        // a late positive's impression was acked with its negative: only the click is held then
        const d = held ?? (id === curId ? cur : undefined);
        if (!d || deps.includes(d)) continue;
        deps.push(d);
        if (held) freed.push(id);
      }
      const e: Example = { features: ex.features, label: ex.label, weight: ex.weight, ts: ex.ts };
      if (ex.propensity !== undefined) e.propensity = ex.propensity;
      const key = `${deps.map((d) => d.seq).join('+')}${ex.source.charAt(0)}${ex.label >= 0.5 ? 1 : 0}`;
      this.ctx.enqueue({ partition: ps.partition, example: e, deps, key, joined: true });
      // the example now holds those messages; the joiner no longer does
      for (const id of freed) this.unretain(ps, id);
    }
  }

  /** The joiner let go of a held event (or an example took it over): drop the joiner's hold. */
  unretain(ps: PartitionState, id: string): void {
    const t = ps.retained.get(id);
    if (!t) return;
    ps.retained.delete(id);
    this.ctx.holds.release(t);
  }
}
