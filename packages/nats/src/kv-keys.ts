import type { JetStreamManager } from 'nats';

/**
 * The keys of a KV bucket matching `filter` (e.g. `mf.3.*`), listed by the stream leader from
 * its subject index: complete, unlike `kv.keys()`, whose ordered consumer stops at the first
 * message reporting nothing pending. With nats-server 2.9 and a wildcard filter that is often
 * the first key when the keys' messages are interleaved with other keys' and listings run
 * concurrently (reproduced: 1 of 2 keys, every time). Keys whose last operation is a delete or
 * purge are listed too: read each and check its operation.
 */
export async function kvKeys(jsm: JetStreamManager, bucket: string, filter: string): Promise<string[]> {
  const prefix = `$KV.${bucket}.`;
  const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}${filter}` });
  return Object.keys(info.state.subjects ?? {})
    .filter((s) => s.startsWith(prefix))
    .map((s) => s.slice(prefix.length))
    .sort();
}
