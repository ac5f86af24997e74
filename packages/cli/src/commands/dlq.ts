import { Command } from 'commander';
import { DeadLetterStore, type DeadLetterFilter, type StoredDeadLetter } from '@freshet/client';
import { deadLetterReasons, FreshetError } from '@freshet/protocol';
import { fmt, table, withAdmin } from './common.js';

interface Common {
  nats?: string;
  cluster: string;
  json?: boolean;
}
interface FilterFlags {
  reason?: string;
  seq?: string;
}

const dec = new TextDecoder('utf-8', { fatal: true });

/** `--reason CODE` and `--seq N` / `--seq A-B` as a filter; CONFIG on anything else. */
function filterOf(f: FilterFlags): DeadLetterFilter {
  const out: DeadLetterFilter = {};
  if (f.reason !== undefined) {
    if (!(deadLetterReasons as readonly string[]).includes(f.reason)) {
      throw new FreshetError('CONFIG', `--reason ${f.reason}: one of ${deadLetterReasons.join(', ')}`);
    }
    out.reason = f.reason;
  }
  if (f.seq !== undefined) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(f.seq);
    if (!m) throw new FreshetError('CONFIG', `--seq ${f.seq}: a sequence N or a range A-B`);
    out.fromSeq = Number(m[1]);
    out.toSeq = Number(m[2] ?? m[1]);
  }
  return out;
}

/** The payload as text when it is UTF-8, else base64. */
function payload(d: StoredDeadLetter): { encoding: 'utf8' | 'base64'; body: string } {
  try {
    return { encoding: 'utf8', body: dec.decode(d.data) };
  } catch {
    return { encoding: 'base64', body: Buffer.from(d.data).toString('base64') };
  }
}

const json = (v: unknown) => process.stdout.write(JSON.stringify(v, null, 2) + '\n');
const summaryOf = (d: StoredDeadLetter) => ({
  seq: d.seq,
  time: new Date(d.time).toISOString(),
  reason: d.reason,
  message: d.message,
  source: d.sourceSubject ?? null,
  sourceSeq: d.sourceSeq ?? null,
  bytes: d.data.byteLength,
  truncatedFrom: d.truncatedFrom ?? null,
});

function withCommon(c: Command): Command {
  return c
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--json', 'print JSON');
}

function withFilter(c: Command): Command {
  return c
    .option('--reason <code>', `only this reason (${deadLetterReasons.join(', ')})`)
    .option('--seq <n|a-b>', 'only this dead-letter sequence, or a range');
}

/**
 * `freshet dlq`: the cluster's dead letters (rejected events, with a reason code). `list` counts
 * them by reason and lists the newest; `show` prints one with its payload; `replay` publishes
 * them again where they came from (after the cause is fixed: a new worker version, a wider
 * limit) and deletes what it replayed; `purge` deletes them.
 */
export function dlqCommand(): Command {
  const cmd = new Command('dlq').description('Dead letters: list, show, replay after a fix, purge');
  withFilter(withCommon(cmd.command('list')))
    .description('Count dead letters by reason and list the newest')
    .option('--limit <n>', 'entries listed (the newest)', '20')
    .action(async (f: Common & FilterFlags & { limit: string }) => {
      const filter = filterOf(f);
      await withAdmin(f, 'freshet-dlq', async (nc) => {
        const store = await DeadLetterStore.open(nc, f.cluster);
        const sum = await store.summary();
        const keep = Math.max(0, Number(f.limit) || 0);
        const newest: StoredDeadLetter[] = [];
        for await (const d of store.scan(filter)) {
          newest.push(d);
          if (newest.length > keep) newest.shift();
        }
        if (f.json) {
          json({ ...sum, entries: newest.map(summaryOf) });
          return;
        }
        const reasons = Object.entries(sum.byReason).sort((a, b) => b[1] - a[1]);
        process.stdout.write(
          `${sum.stream}: ${sum.messages} dead letter(s), ${fmt.bytes(sum.bytes)}` +
            (reasons.length ? `; by reason: ${reasons.map(([r, n]) => `${r} ${n}`).join(', ')}` : '') +
            '\n',
        );
        if (newest.length) {
          process.stdout.write(
            '\n' +
              table(
                ['SEQ', 'STORED', 'REASON', 'SOURCE', 'MESSAGE'],
                newest.map((d) => [
                  String(d.seq),
                  fmt.ago(d.time),
                  d.reason,
                  d.sourceSubject ? `${d.sourceSubject}#${d.sourceSeq ?? '?'}` : '–',
                  d.message.slice(0, 80),
                ]),
              ) +
              '\n',
          );
        }
      });
    });
  withCommon(cmd.command('show'))
    .description('Print one dead letter: its headers and payload')
    .argument('<seq>', 'dead-letter stream sequence (from `dlq list`)')
    .action(async (seq: string, f: Common) => {
      if (!/^\d+$/.test(seq)) throw new FreshetError('CONFIG', `seq ${seq}: a positive integer`);
      await withAdmin(f, 'freshet-dlq', async (nc) => {
        const d = await (await DeadLetterStore.open(nc, f.cluster)).get(Number(seq));
        if (!d)
          throw new FreshetError('BAD_REQUEST', `no dead letter ${seq} (purged, replayed or never stored)`);
        const p = payload(d);
        if (f.json) {
          json({ ...summaryOf(d), payloadEncoding: p.encoding, payload: p.body });
          return;
        }
        const s = summaryOf(d);
        process.stdout.write(
          Object.entries(s)
            .map(([k, v]) => `${k.padEnd(13)} ${String(v)}`)
            .join('\n') + `\npayload (${p.encoding}):\n${p.body}\n`,
        );
      });
    });
  withFilter(withCommon(cmd.command('replay')))
    .description('Publish dead letters again on the subject they came from; delete each once stored')
    .option('--dry-run', 'only count what would be replayed')
    .action(async (f: Common & FilterFlags & { dryRun?: boolean }) => {
      const filter = filterOf(f);
      await withAdmin(f, 'freshet-dlq', async (nc) => {
        const r = await (await DeadLetterStore.open(nc, f.cluster)).replay(filter, { dryRun: !!f.dryRun });
        if (f.json) return json(r);
        process.stdout.write(
          `${f.dryRun ? 'would replay' : 'replayed'} ${r.replayed}; skipped ${r.skipped.length}\n` +
            r.skipped.map((x) => `  #${x.seq}: ${x.why}\n`).join(''),
        );
      });
    });
  withFilter(withCommon(cmd.command('purge')))
    .description('Delete dead letters (all, or those matching --reason/--seq)')
    .option('--yes', 'really delete (without it, only counts)')
    .action(async (f: Common & FilterFlags & { yes?: boolean }) => {
      const filter = filterOf(f);
      await withAdmin(f, 'freshet-dlq', async (nc) => {
        const store = await DeadLetterStore.open(nc, f.cluster);
        if (!f.yes) {
          let n = 0;
          for await (const _ of store.scan(filter)) n++;
          if (f.json) return json({ purged: 0, wouldPurge: n });
          process.stdout.write(`would delete ${n} dead letter(s); pass --yes to delete them\n`);
          return;
        }
        const purged = await store.purge(filter);
        if (f.json) return json({ purged });
        process.stdout.write(`deleted ${purged} dead letter(s)\n`);
      });
    });
  return cmd;
}
