import { createRequire } from 'node:module';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { FreshetError } from '@freshet/protocol';

/** Which TensorFlow.js backend to use; `auto` = `tensorflow` when tfjs-node loads, else `wasm`. */
export type BackendPreference = 'auto' | 'tensorflow' | 'wasm' | 'cpu';

/** The backend a thread ended up on. */
export interface BackendInfo {
  backend: string;
  /** Whether the wasm backend runs its SIMD build (undefined for other backends). */
  simd?: boolean;
}

const require = createRequire(import.meta.url);
let ready: Promise<BackendInfo> | undefined;
let active: BackendInfo | undefined;

/**
 * Selects and starts the TensorFlow.js backend for this thread (each worker thread has its own
 * tfjs engine and wasm instance, so each calls this once). Never silently ends on `cpu`: tfjs
 * falls back to it when wasm fails to start, so the backend actually in use is checked and a
 * mismatch throws `CONFIG` unless `cpu` was asked for.
 */
export function initBackend(preference: BackendPreference = 'auto'): Promise<BackendInfo> {
  if (ready) {
    return ready.then((info) => {
      if (preference !== 'auto' && !sameBackend(preference, info.backend)) {
        throw new FreshetError('CONFIG', `backend already initialised as ${info.backend}, not ${preference}`);
      }
      return info;
    });
  }
  ready = start(preference).then(
    (info) => {
      active = info;
      return info;
    },
    (err: unknown) => {
      ready = undefined;
      throw err;
    },
  );
  return ready;
}

function sameBackend(preference: BackendPreference, backend: string): boolean {
  return preference === backend;
}

/** The backend this thread runs on; throws `NOT_READY` before {@link initBackend} resolved. */
export function activeBackend(): BackendInfo {
  if (!active) throw new FreshetError('NOT_READY', 'call initBackend() before computing');
  return active;
}

async function start(preference: BackendPreference): Promise<BackendInfo> {
  if (preference === 'auto' || preference === 'tensorflow') {
    const loaded = await tryTfjsNode();
    if (loaded) return { backend: check('tensorflow') };
    if (preference === 'tensorflow') {
      throw new FreshetError(
        'CONFIG',
        'backend "tensorflow" asked for but @tensorflow/tfjs-node does not load',
      );
    }
  }
  if (preference === 'cpu') {
    await tf.setBackend('cpu');
    await tf.ready();
    return { backend: check('cpu') };
  }
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  // The .wasm binaries sit next to the package's main file; pointing at them by path works in
  // the main thread and in worker threads alike (no fetch, no cwd dependence).
  const dir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm'));
  wasm.setWasmPaths(dir + path.sep);
  const ok = await tf.setBackend('wasm');
  await tf.ready();
  if (!ok) throw new FreshetError('CONFIG', 'the wasm backend failed to start');
  const simd = Boolean(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'));
  return { backend: check('wasm'), simd };
}

async function tryTfjsNode(): Promise<boolean> {
  try {
    // Optional dependency: its install needs the internet, so it is often absent.
    const name = '@tensorflow/tfjs-node';
    await import(name);
    const ok = await tf.setBackend('tensorflow');
    await tf.ready();
    return ok;
  } catch {
    return false;
  }
}

function check(expected: string): string {
  const got = tf.getBackend();
  if (got !== expected) {
    throw new FreshetError('CONFIG', `tfjs backend is "${got}", expected "${expected}"`);
  }
  return got;
}
