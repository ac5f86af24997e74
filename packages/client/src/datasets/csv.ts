import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

/**
 * Splits one CSV/TSV record. Handles quoted fields with doubled quotes and delimiters inside;
 * empty fields stay empty strings (missing values), and trailing empty fields are kept.
 */
export function splitCsvLine(line: string, delimiter = ','): string[] {
  if (!line.includes('"')) return line.split(delimiter);
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"') {
        if (line[i + 1] === '"') {
          cur += '"';
          i++;
        } else quoted = false;
      } else cur += ch;
    } else if (ch === '"' && cur.length === 0) quoted = true;
    else if (ch === delimiter) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

/** The lines of a text file, streamed (CRLF tolerated), without loading the file. */
export async function* readLines(path: string, encoding: BufferEncoding = 'utf8'): AsyncGenerator<string> {
  const rl = createInterface({ input: createReadStream(path, { encoding }), crlfDelay: Infinity });
  try {
    for await (const line of rl) yield line;
  } finally {
    rl.close();
  }
}
