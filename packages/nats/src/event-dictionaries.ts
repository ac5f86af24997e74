import type { KV, NatsConnection } from 'nats';
import {
  EVENT_DICTIONARY_MAX_BYTES,
  eventDictionaryId,
  FreshetError,
  subjects,
  type EventDictionaryLookup,
} from '@freshet/protocol';
import { kvKeys } from './kv-keys.js';

/**
 * The cluster's preset dictionaries of compressed feedback events (see @freshet/protocol's
 * event-compression.ts), one KV entry per dictionary under its id. Entries are written once and
 * never changed: an id names its bytes, so every receiver decodes an event the same way however
 * late it fetched the dictionary.
 */

const isNotFound = (e: unknown) => /not found/i.test((e as Error)?.message ?? '');

/**
 * Binds the dictionary bucket; with `create`, makes it when missing with the feedback stream's
 * replicas (an R1 bucket would make compressed events undecodable when its one server is down).
 */
async function dictionaryBucket(
  nc: NatsConnection,
  cluster: string,
  create: boolean,
): Promise<KV | undefined> {
  const s = subjects(cluster);
  const js = nc.jetstream();
  const kv = await js.views.kv(s.dictBucket, { bindOnly: true });
  try {
    await kv.status();
    return kv;
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  if (!create) return undefined;
  let replicas = 1;
  try {
    const jsm = await nc.jetstreamManager();
    replicas = (await jsm.streams.info(s.feedbackStream)).config.num_replicas;
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  return js.views.kv(s.dictBucket, { history: 1, replicas });
}

/**
 * Stores `dictionary` under its id unless it is there already; returns the id. Throws CONFIG for
 * a dictionary over 32 KiB and CONFLICT when the id holds other bytes (an Adler-32 collision:
 * change the dictionary, e.g. by one more sample).
 */
export async function putEventDictionary(
  nc: NatsConnection,
  cluster: string,
  dictionary: Uint8Array,
): Promise<string> {
  if (dictionary.length === 0 || dictionary.length > EVENT_DICTIONARY_MAX_BYTES) {
    throw new FreshetError(
      'CONFIG',
      `an event dictionary holds 1 to ${EVENT_DICTIONARY_MAX_BYTES} bytes, not ${dictionary.length}`,
    );
  }
  const id = eventDictionaryId(dictionary);
  const kv = (await dictionaryBucket(nc, cluster, true))!;
  try {
    await kv.create(id, dictionary);
    return id;
  } catch (e) {
    // create fails when the key exists: fine when it holds these very bytes
    const held = await kv.get(id);
    if (!held || held.operation !== 'PUT') throw e;
    if (!Buffer.from(held.value).equals(Buffer.from(dictionary))) {
      throw new FreshetError('CONFLICT', `event dictionary ${id} already holds other bytes`);
    }
    return id;
  }
}

/** The ids of the stored dictionaries (for `freshet events dict list`). */
export async function listEventDictionaries(
  nc: NatsConnection,
  cluster: string,
): Promise<{ id: string; bytes: number; created: Date }[]> {
  const kv = await dictionaryBucket(nc, cluster, false);
  if (!kv) return [];
  const out: { id: string; bytes: number; created: Date }[] = [];
  for (const key of await kvKeys(await nc.jetstreamManager(), subjects(cluster).dictBucket, '*')) {
    const e = await kv.get(key);
    if (e && e.operation === 'PUT') out.push({ id: key, bytes: e.value.length, created: e.created });
  }
  return out;
}

/**
 * A receiver's view of the dictionaries: the ones it fetched, by id. A worker asks
 * {@link EventDictionaries.pending} before parsing a compressed event: an unknown id starts one
 * fetch and the event waits (the worker hands it back for later); an id the bucket does not hold
 * is remembered as missing for `retryMissingMs`, and its events are dead-lettered meanwhile.
 */
export class EventDictionaries implements EventDictionaryLookup {
  private readonly known = new Map<string, Uint8Array>();
  private readonly fetching = new Map<string, Promise<boolean>>();
  private readonly missingSince = new Map<string, number>();
  private kv: KV | undefined;

  /** `nc`: the connection, or where to find it once there is one (a worker's, after start). */
  constructor(
    private readonly nc: NatsConnection | (() => NatsConnection | undefined),
    private readonly cluster: string,
    private readonly o: { retryMissingMs?: number; maxDictionaries?: number } = {},
  ) {}

  get(id: string): Uint8Array | undefined {
    return this.known.get(id);
  }

  get size(): number {
    return this.known.size;
  }

  /** True while an event compressed with `id` should wait: unknown, and not known to be missing. */
  pending(id: string): boolean {
    if (this.known.has(id)) return false;
    const since = this.missingSince.get(id);
    if (since !== undefined && Date.now() - since < (this.o.retryMissingMs ?? 30_000)) return false;
    void this.fetch(id);
    return true;
  }

  /** Fetches `id` (one request per id at a time): true once it is known. Never throws. */
  fetch(id: string): Promise<boolean> {
    if (this.known.has(id)) return Promise.resolve(true);
    let f = this.fetching.get(id);
    if (!f) {
      f = this.load(id).finally(() => this.fetching.delete(id));
      this.fetching.set(id, f);
    }
    return f;
  }

  private async load(id: string): Promise<boolean> {
    try {
      const nc = typeof this.nc === 'function' ? this.nc() : this.nc;
      if (!nc) throw new FreshetError('NOT_READY', 'not connected');
      this.kv ??= await dictionaryBucket(nc, this.cluster, false);
      const e = this.kv ? await this.kv.get(id) : null;
      // a value that is not the id's bytes (written by other tools) would inflate to garbage
      if (!e || e.operation !== 'PUT' || eventDictionaryId(e.value) !== id) {
        // bounded: events naming ever new ids (a broken publisher) must not grow it without end
        if (this.missingSince.size >= 4096) this.missingSince.delete(this.missingSince.keys().next().value!);
        this.missingSince.set(id, Date.now());
        return false;
      }
      if (this.known.size >= (this.o.maxDictionaries ?? 256)) {
        // bounded: the oldest goes (it is fetched again should it be used again)
        this.known.delete(this.known.keys().next().value!);
      }
      this.known.set(id, e.value);
      this.missingSince.delete(id);
      return true;
    } catch {
      // the bucket unreachable: not missing, just not yet; the next event asks again
      return false;
    }
  }
}
