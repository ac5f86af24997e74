import { datasetDictionary } from '@freshet/client';
import { eventDictionaryId, FreshetError } from '@freshet/protocol';

/** The dictionary a bench compresses its events with, and where its samples came from. */
export interface BenchDictionary {
  dictionary: Uint8Array;
  id: string;
  /** Events of the data passed over before the samples: the run's own, when the data has more. */
  skip: number;
  samples: number;
}

const SAMPLES = 2000;
const built = new Map<string, Promise<BenchDictionary>>();

/**
 * A dictionary of {@link SAMPLES} events encoded as the bench publishes them, taken after the
 * events the run sends (`limit`) where the data has them, so the compression measured is that
 * of events the dictionary never saw; from the start otherwise (the result says `skip: 0`).
 * Built once per data, encoding and limit within a process (`bench wire` runs many clusters).
 */
export function benchDictionary(o: {
  data: string;
  spec?: string | undefined;
  limit?: number | undefined;
  encoding: 'json' | 'msgpack';
}): Promise<BenchDictionary> {
  const key = JSON.stringify([o.data, o.spec, o.limit, o.encoding]);
  let d = built.get(key);
  if (!d) {
    d = build(o);
    built.set(key, d);
    d.catch(() => built.delete(key));
  }
  return d;
}

async function build(o: Parameters<typeof benchDictionary>[0]): Promise<BenchDictionary> {
  const make = (skip: number) =>
    datasetDictionary({
      data: o.data,
      ...(o.spec !== undefined ? { spec: o.spec } : {}),
      skip,
      samples: SAMPLES,
      encoding: o.encoding,
      // the bench's event ids look like this (cluster-bench's runPhase)
      idPrefix: `throughput-0-${Date.now().toString(36)}`,
    });
  const skip = o.limit ?? 0;
  try {
    const dictionary = await make(skip);
    return { dictionary, id: eventDictionaryId(dictionary), skip, samples: SAMPLES };
  } catch (e) {
    if (!(e instanceof FreshetError) || e.code !== 'CONFIG' || skip === 0) throw e;
    const dictionary = await make(0);
    return { dictionary, id: eventDictionaryId(dictionary), skip: 0, samples: SAMPLES };
  }
}
