import type { EventLoopUtilization } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { ThreadBusy } from '../src/thread-busy.js';

const elu = (active: number, idle: number): EventLoopUtilization => ({
  active,
  idle,
  utilization: active / (active + idle),
});

describe('ThreadBusy', () => {
  it('reads each thread’s busy share over the last window, not since its start', () => {
    let samples: (EventLoopUtilization | undefined)[] = [elu(100, 900), elu(0, 1000)];
    const busy = new ThreadBusy(() => samples, 1000);
    expect(busy.read(0)).toEqual([]);
    // a second later: the first thread was busy 250 of 1000 ms, the second all of it
    samples = [elu(350, 1650), elu(1000, 1000)];
    expect(busy.read(1000)).toEqual([0.25, 1]);
    // within the window: the same figures, no new sample taken
    samples = [elu(0, 0), elu(0, 0)];
    expect(busy.read(1500)).toEqual([0.25, 1]);
    // the second thread started again (its count back near 0), a third one not running
    samples = [elu(350, 2650), elu(10, 20), undefined];
    expect(busy.read(2000)).toEqual([0, 0, 0]);
  });
});
