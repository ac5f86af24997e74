import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './repo-root.js';

const execFileP = promisify(execFile);

/** Debian's python3-torch installs for the system interpreter (see scripts/install-peers.sh). */
const PYTHON = process.env.FRESHET_PYTHON ?? '/usr/bin/python3';

/** A peer's JSON line, or why it did not run (`unavailable: …` when Python or PyTorch is missing). */
export type PeerResult = { ok: true; json: Record<string, unknown> } | { ok: false; peer: string };

/**
 * Runs `bench/peers/<script>` with the system Python and parses the last line of its stdout as
 * JSON. Never throws: a missing interpreter or torch, a crash or a timeout come back as
 * `{ ok: false, peer: reason }`, and the reason is also written to stderr so a user sees it.
 */
export async function runTorchPeer(script: string, args: string[], timeoutMs = 900_000): Promise<PeerResult> {
  const path = join(repoRoot(), 'bench', 'peers', script);
  const fail = (peer: string): PeerResult => {
    process.stderr.write(`[bench] PyTorch peer ${script}: ${peer}\n`);
    return { ok: false, peer };
  };
  if (!existsSync(path)) return fail(`unavailable: ${join('bench', 'peers', script)} is missing`);
  if (!existsSync(PYTHON))
    return fail(`unavailable: ${PYTHON} not found (scripts/install-peers.sh installs python3-torch)`);
  try {
    const r = await execFileP(PYTHON, [path, ...args], { timeout: timeoutMs, maxBuffer: 16 << 20 });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    return { ok: true, json: JSON.parse(line) as Record<string, unknown> };
  } catch (e) {
    const msg = String((e as { stderr?: string }).stderr ?? (e as Error).message);
    // The peers import numpy before torch: either missing means the peer stack is not installed.
    const missing = /No module named '(torch|numpy)'/.exec(msg);
    if (missing)
      return fail(
        `unavailable: ${missing[1] === 'torch' ? 'PyTorch' : 'numpy (for the PyTorch peers)'} is not ` +
          'installed (scripts/install-peers.sh installs python3-torch and python3-numpy)',
      );
    return fail(`failed: ${msg.trim().split('\n').pop()?.slice(0, 300) ?? 'unknown error'}`);
  }
}
