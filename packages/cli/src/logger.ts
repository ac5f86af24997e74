import { pino, type Logger } from 'pino';

/**
 * Structured logs (JSON lines) to stderr, so stdout stays free for `--json` output and tables.
 * FRESHET_LOG_LEVEL picks the level (default info).
 */
export function createLogger(name: string, level = process.env.FRESHET_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination(2));
}
export type { Logger };
