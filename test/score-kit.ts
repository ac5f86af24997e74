import type { ModelConfigInput } from '@freshet/model';
import { startServing, type ServingNode } from '@freshet/serving';

/** A user, an item and a device: the small wide&deep the serving tests rank with. */
export const userItemDevice: ModelConfigInput['features'] = {
  fields: [
    { kind: 'categorical', name: 'user' },
    { kind: 'categorical', name: 'item' },
    { kind: 'categorical', name: 'device' },
  ],
};

/** What a node answers a score request over HTTP. */
export interface ScoreAnswer {
  status: number;
  body: {
    scores?: number[];
    version?: number;
    versions?: number[];
    error?: { code: string; retryable: boolean };
  };
}

/** POSTs `request` to the node's `/v1/score`. */
export async function postScore(node: ServingNode, request: unknown): Promise<ScoreAnswer> {
  const r = await fetch(`${node.httpUrl}/v1/score`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(request),
  });
  return { status: r.status, body: (await r.json()) as ScoreAnswer['body'] };
}

/** A serving node, whole or holding one slice, started and caught up. */
export async function startReadyNode(
  o: { cluster: string; shards: number; url: string; model: ModelConfigInput },
  slice?: { index: number; count: number },
): Promise<ServingNode> {
  const node = await startServing({
    cluster: o.cluster,
    shards: o.shards,
    nats: { servers: o.url },
    model: o.model,
    ...(slice ? { slice } : {}),
  });
  try {
    await node.whenReady();
  } catch (e) {
    await node.stop();
    throw e;
  }
  return node;
}
