import { describe, expect, it } from 'vitest';
import { spawnChild, waitFor } from '@freshet/testkit';
import { CpuMeter, procCpuSeconds } from '../src/proc-cpu.js';

describe('CPU per process', () => {
  it('charges a busy child process its CPU seconds from /proc', async () => {
    const busy = spawnChild(process.execPath, ['-e', 'const t=Date.now(); while (Date.now()-t < 20000) {}']);
    const pid = busy.child.pid!;
    const meter = new CpuMeter(() => [{ group: 'busy', pid }]);
    meter.mark();
    await waitFor(() => (meter.seconds().busy ?? 0) >= 0.3, { timeoutMs: 10_000, message: 'busy child CPU' });
    expect(procCpuSeconds(pid)).toBeGreaterThanOrEqual(0.3);
    await busy.stop(1000);
    // A process that exited keeps the CPU it was last seen with.
    expect(meter.seconds().busy).toBeGreaterThanOrEqual(0.3);
  });
});
