import type { NatsConnection } from 'nats';
import { frameEndpoint, type Endpoint } from '@freshet/nats';
import {
  decodeSliceRows,
  encodeSliceRowsReply,
  FreshetError,
  subjects,
  type SliceRowsReply,
} from '@freshet/protocol';
import type { Replica } from './replica.js';

export interface SliceServerOptions {
  cluster: string;
  /** The answering node's id (a rank's response names the nodes whose rows it used). */
  node: string;
  /** Requests answered at once; beyond it OVERLOADED (the asking node fails that request). */
  maxInFlight?: number;
  maxBytes?: number;
  onError?: (err: Error) => void;
}

/**
 * A sliced node's answer to the other slices' nodes (packages/serving/README.md "Sliced serving"): the rows
 * of the keys they ask for, from the shards its slice holds, with those shards' versions. The
 * nodes holding one slice share a queue group, so each request reaches one of them. Rows are read
 * in one synchronous step: a request sees each row before or after a delta, never half-written.
 */
export function serveSliceRows(nc: NatsConnection, replica: Replica, o: SliceServerOptions): Endpoint {
  const sl = replica.slice;
  if (!sl) throw new FreshetError('CONFIG', 'serveSliceRows needs a sliced replica');
  const subj = subjects(o.cluster);
  const own = Array.from({ length: replica.nShards }, (_, s) => s).filter((s) => replica.holds(s));
  return frameEndpoint(
    nc,
    subj.sliceRows(sl.count, sl.index),
    (data) => {
      const req = decodeSliceRows(data);
      if (req.slice.index !== sl.index || req.slice.count !== sl.count)
        throw new FreshetError(
          'NOT_OWNER',
          `asked slice ${req.slice.index}/${req.slice.count}, this node holds ${sl.index}/${sl.count}`,
        );
      if (!replica.ready) throw new FreshetError('NOT_READY', 'slice still loading its snapshot');
      const versions = replica.versions();
      const reply: SliceRowsReply = {
        shards: own,
        versions: own.map((s) => versions[s]!),
        newestTs: replica.newestDeltaTs(),
        node: o.node,
        tables: req.tables.map(({ t, keys }) => {
          const spec = replica.spec.tables[t];
          if (!spec || spec.kind !== 'sparse')
            throw new FreshetError('UNKNOWN_TABLE', `no sparse table ${t}`);
          const values = new Float32Array((keys.length >>> 1) * spec.dim);
          try {
            replica.gather(t, keys, values);
          } catch (e) {
            // a key of another slice: the asking node routes with another shard count
            throw new FreshetError('NOT_OWNER', (e as Error).message);
          }
          return { t, dim: spec.dim, values };
        }),
      };
      return encodeSliceRowsReply(reply);
    },
    {
      queue: subj.sliceQueue(sl.count, sl.index),
      maxInFlight: o.maxInFlight ?? 256,
      ...(o.maxBytes !== undefined ? { maxBytes: o.maxBytes } : {}),
      ...(o.onError ? { onError: (e) => o.onError!(e) } : {}),
    },
  );
}
