import { describe, expect, it } from 'vitest';
import { FreshetError } from '@freshet/protocol';
import { Lifecycle, type ActorLog, type LifecycleHooks } from '../src/index.js';

/** A lifecycle over hooks that record their calls, with its log lines kept. */
function harness(hooks: Partial<LifecycleHooks> = {}, signal?: AbortSignal) {
  const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const calls: string[] = [];
  const log: ActorLog = (level, msg, fields) => lines.push({ level, msg, fields });
  const life = new Lifecycle(
    {
      start: hooks.start ?? (() => (calls.push('start'), Promise.resolve())),
      stop: hooks.stop ?? ((from) => (calls.push(`stop:${from}`), Promise.resolve())),
    },
    { name: 'actor-0', log, signal },
  );
  const path = () => lines.map((l) => l.fields?.to);
  return { life, lines, calls, path };
}

const illegal = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return e instanceof FreshetError && e.code === 'ILLEGAL_STATE';
  }
  return false;
};

describe('actor lifecycle', () => {
  it('goes created → starting → running → draining → stopped, logging every transition', async () => {
    const { life, lines, calls, path } = harness();
    expect(life.state).toBe('created');
    await life.start();
    expect(life.state).toBe('running');
    await life.stop();
    expect(life.state).toBe('stopped');
    expect(calls).toEqual(['start', 'stop:running']);
    expect(path()).toEqual(['starting', 'running', 'draining', 'stopped']);
    expect(lines[1]).toEqual({
      level: 'info',
      msg: 'actor-0 running',
      fields: { actor: 'actor-0', from: 'starting', to: 'running' },
    });
  });

  it('throws ILLEGAL_STATE for a transition the table forbids', async () => {
    const { life } = harness();
    expect(illegal(() => life.to('running'))).toBe(true);
    expect(illegal(() => life.to('draining'))).toBe(true);
    await life.start();
    await expect(life.start()).rejects.toMatchObject({ code: 'ILLEGAL_STATE' });
    await life.stop();
    expect(illegal(() => life.to('running'))).toBe(true);
    await expect(life.start()).rejects.toMatchObject({ code: 'ILLEGAL_STATE' });
    expect(life.state).toBe('stopped');
  });

  it('gives every stop() caller the same promise and drains once', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { life, calls } = harness({ stop: () => (calls.push('stop'), gate) });
    await life.start();
    const a = life.stop();
    const b = life.stop();
    expect(b).toBe(a);
    expect(life.state).toBe('draining');
    release();
    await Promise.all([a, b, life.stop()]);
    expect(life.stop()).toBe(a);
    expect(calls).toEqual(['start', 'stop']);
    expect(life.state).toBe('stopped');
  });

  it('ends a failing start in failed, and a stop after it releases and stops', async () => {
    const { life, calls, lines, path } = harness({
      start: () => Promise.reject(new FreshetError('UNAVAILABLE', 'no server')),
    });
    await expect(life.start()).rejects.toThrow('no server');
    expect(life.state).toBe('failed');
    expect(lines.at(-1)).toMatchObject({ level: 'error', fields: { from: 'starting', error: 'no server' } });
    await life.stop();
    expect(calls).toEqual(['stop:failed']);
    expect(path()).toEqual(['starting', 'failed', 'draining', 'stopped']);
  });

  it('a stop while starting aborts the start’s wait and waits for it', async () => {
    const { life, path } = harness({
      start: (signal) =>
        new Promise((_, reject) =>
          signal.addEventListener('abort', () => reject(new FreshetError('SHUTTING_DOWN', 'stopped')), {
            once: true,
          }),
        ),
    });
    const started = life.start();
    await life.stop();
    await expect(started).rejects.toMatchObject({ code: 'SHUTTING_DOWN' });
    expect(path()).toEqual(['starting', 'failed', 'draining', 'stopped']);
  });

  it('stops on its AbortSignal, and refuses to start once it has fired', async () => {
    const ac = new AbortController();
    const { life, calls } = harness({}, ac.signal);
    await life.start();
    ac.abort();
    await life.stop();
    expect(calls).toEqual(['start', 'stop:running']);

    const { life: late } = harness({}, ac.signal);
    await expect(late.start()).rejects.toMatchObject({ code: 'SHUTTING_DOWN' });
    expect(late.state).toBe('failed');
  });

  it('a stop before start just ends it, and a stop during a restart waits for it', async () => {
    const { life, calls, path } = harness();
    await life.stop();
    expect(path()).toEqual(['stopped']);
    expect(calls).toEqual([]);

    const h = harness();
    await h.life.start();
    let release!: () => void;
    const restarted = h.life.restart(() => new Promise<void>((r) => (release = r)));
    const stopped = h.life.stop();
    expect(h.life.state).toBe('starting');
    release();
    await restarted;
    await stopped;
    expect(h.path()).toEqual(['starting', 'running', 'starting', 'running', 'draining', 'stopped']);
  });

  it('a failing stop hook ends in failed and every caller sees the error', async () => {
    const { life } = harness({ stop: () => Promise.reject(new Error('disk full')) });
    await life.start();
    await expect(life.stop()).rejects.toThrow('disk full');
    await expect(life.stop()).rejects.toThrow('disk full');
    expect(life.state).toBe('failed');
  });
});
