/**
 * The one logger signature of every Freshet actor (shard, worker, serving node, publisher) and
 * their parts. Levels are the three an operator acts on; debug chatter has no place in a
 * long-running actor's stderr.
 */
export type LogLevel = 'info' | 'warn' | 'error';

/** Structured log lines: a message plus fields that a log pipeline can index. */
export type ActorLog = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void;

/** The default of library embedders (tests, benches): an actor is silent unless given a log. */
export const silentLog: ActorLog = () => undefined;

/**
 * JSON lines (`{t, level, ...base, msg, ...fields}`) on stderr: stdout of a role process carries
 * only its machine-readable ready line.
 */
export function jsonLineLog(
  base: Record<string, unknown> = {},
  write: (line: string) => void = (line) => void process.stderr.write(line),
): ActorLog {
  return (level, msg, fields) =>
    write(JSON.stringify({ t: new Date().toISOString(), level, ...base, msg, ...fields }) + '\n');
}
