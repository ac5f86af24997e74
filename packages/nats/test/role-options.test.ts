import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readRoleOptions, roleOptionsArgs, withEnvNats } from '../src/index.js';

describe('role options', () => {
  it('puts FRESHET_NATS_* settings under the options’ own nats', () => {
    const env = { servers: ['nats://env:4222'], user: 'u', pass: 'secret' };
    expect(withEnvNats({ cluster: 'c' }, env)).toEqual({ cluster: 'c', nats: env });
    expect(withEnvNats({ cluster: 'c', nats: { servers: 'nats://opt:4222' } }, env)).toEqual({
      cluster: 'c',
      nats: { servers: 'nats://opt:4222', user: 'u', pass: 'secret' },
    });
    expect(() => withEnvNats({ nats: 'x' }, env)).toThrow(/nats must be an object/);
  });

  it('reads --options-json, @file and --options-file, and says what is wrong', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freshet-ro-'));
    try {
      const file = join(dir, 'o.json');
      await writeFile(file, '{"cluster":"f"}');
      const env = { user: 'u' };
      expect(readRoleOptions(roleOptionsArgs(['--options-json', '{"cluster":"j"}']), env)).toEqual({
        cluster: 'j',
        nats: { user: 'u' },
      });
      expect(readRoleOptions(roleOptionsArgs(['--options-json', `@${file}`]), env).cluster).toBe('f');
      expect(readRoleOptions(roleOptionsArgs(['--options-file', file]), env).cluster).toBe('f');
      expect(() => readRoleOptions(roleOptionsArgs([]), env)).toThrow(/--options-json/);
      expect(() => readRoleOptions({ optionsJson: '{nope' }, env)).toThrow(/not JSON/);
      expect(() => readRoleOptions({ optionsJson: '[1]' }, env)).toThrow(/JSON object/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
