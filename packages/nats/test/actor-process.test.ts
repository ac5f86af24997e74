import { describe, expect, it } from 'vitest';
import { FreshetError } from '@freshet/protocol';
import {
  Lifecycle,
  parseReadyLine,
  runActorProcess,
  type ActorLog,
  type ProcessActor,
} from '../src/index.js';

/** An actor whose start does what `start` says; no NATS: this is about the process contract. */
class TestActor implements ProcessActor {
  readonly role = 'worker';
  readonly cluster = 'c';
  readonly id = 'worker-7';
  private readonly life: Lifecycle;
  constructor(deps: { signal: AbortSignal; log: ActorLog }, start: (signal: AbortSignal) => Promise<void>) {
    this.life = new Lifecycle({ start, stop: () => Promise.resolve() }, { name: this.id, ...deps });
  }
  get state() {
    return this.life.state;
  }
  start() {
    return this.life.start();
  }
  stop() {
    return this.life.stop();
  }
  readyFields() {
    return { partitions: [1, 2] };
  }
}

const quiet: ActorLog = () => undefined;

describe('runActorProcess', () => {
  it('prints one ready line, runs until the signal, stops the actor, then closes the extras', async () => {
    const ac = new AbortController();
    const out: string[] = [];
    const events: string[] = [];
    let actor!: TestActor;
    const code = runActorProcess({
      signal: ac.signal,
      out: (l) => out.push(l),
      options: () => ({}),
      create: (_o, deps) => (actor = new TestActor({ ...deps, log: quiet }, () => Promise.resolve())),
      onStarted: () =>
        Promise.resolve({
          fields: { metrics: 'http://127.0.0.1:1/metrics' },
          close: () => (events.push(`close after ${actor.state}`), Promise.resolve()),
        }),
    });
    await new Promise((r) => setTimeout(r, 20));
    const ready = parseReadyLine(`{"t":"x","level":"info"}\n${out.join('')}`);
    expect(ready).toEqual({
      event: 'ready',
      role: 'worker',
      cluster: 'c',
      id: 'worker-7',
      pid: process.pid,
      partitions: [1, 2],
      metrics: 'http://127.0.0.1:1/metrics',
    });
    expect(actor.state).toBe('running');
    ac.abort();
    expect(await code).toBe(0);
    expect(actor.state).toBe('stopped');
    expect(events).toEqual(['close after stopped']);
    expect(out).toHaveLength(1);
  });

  it('ends when the extras say so (a drain command)', async () => {
    const out: string[] = [];
    const code = await runActorProcess({
      signal: new AbortController().signal,
      out: (l) => out.push(l),
      options: () => ({}),
      create: (_o, deps) => new TestActor({ ...deps, log: quiet }, () => Promise.resolve()),
      onStarted: () => Promise.resolve({ done: Promise.resolve() }),
    });
    expect(code).toBe(0);
    expect(parseReadyLine(out.join(''))?.id).toBe('worker-7');
  });

  it('exits 1 without a ready line when the start fails, 0 when shut down while starting', async () => {
    const out: string[] = [];
    let failed!: TestActor;
    const code = await runActorProcess({
      signal: new AbortController().signal,
      out: (l) => out.push(l),
      options: () => ({}),
      create: (_o, deps) =>
        (failed = new TestActor({ ...deps, log: quiet }, () =>
          Promise.reject(new FreshetError('UNAVAILABLE', 'no server')),
        )),
    });
    expect(code).toBe(1);
    expect(failed.state).toBe('stopped');

    const ac = new AbortController();
    const waiting = runActorProcess({
      signal: ac.signal,
      out: (l) => out.push(l),
      options: () => ({}),
      create: (_o, deps) =>
        new TestActor(
          { ...deps, log: quiet },
          (signal) =>
            new Promise((_, reject) =>
              signal.addEventListener('abort', () => reject(new FreshetError('SHUTTING_DOWN', 'stop')), {
                once: true,
              }),
            ),
        ),
    });
    setTimeout(() => ac.abort(), 20);
    expect(await waiting).toBe(0);
    expect(out).toEqual([]);
  });

  it('exits 2 for unusable options', async () => {
    const code = await runActorProcess({
      signal: new AbortController().signal,
      options: () => {
        throw new FreshetError('CONFIG', 'pass the role options');
      },
      create: () => {
        throw new Error('not reached');
      },
    });
    expect(code).toBe(2);
  });
});
