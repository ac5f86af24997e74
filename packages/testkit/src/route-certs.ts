import { issueRouteCerts, type RouteTls } from '@freshet/nats';

/**
 * A throwaway CA and one certificate per route node (1 day, SAN IP 127.0.0.1 and localhost:
 * what the peers dial here), made in `dir` by @freshet/nats's `issueRouteCerts`. `prefix` keeps
 * several sets apart (a second CA for a stranger's node).
 */
export function writeRouteCerts(dir: string, nodes: number, prefix = 'route'): RouteTls[] {
  return issueRouteCerts(dir, { hosts: ['127.0.0.1', 'localhost'], nodes, days: 1, prefix }).nodes;
}
