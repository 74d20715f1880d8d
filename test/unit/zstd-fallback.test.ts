/**
 * Without a usable zstd program, zstd layers are decoded by fzstd (src/archive/zstd-program.ts):
 * a `zstd` on PATH that cannot be started (here: a script whose interpreter does not exist) is
 * given up on before any byte is read, and remembered as missing; UNIONCTL_ZSTD=native then
 * says what to install. The program is looked up once per process, so this file has a process of
 * its own (the test runner runs each file in one) and its PATH holds only the broken program.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decompressedStream } from '../../src/archive/decompress.js';
import { zstdDecoder, zstdProgram } from '../../src/archive/zstd-program.js';
import { UnionctlError } from '../../src/errors.js';
import { toolsMissing } from '../helpers/requires.js';
import { chunked } from '../helpers/tarbuild.js';

async function decode(data: Buffer): Promise<Buffer> {
  const { stream } = await decompressedStream(chunked(data));
  const parts: Buffer[] = [];
  for await (const piece of stream) parts.push(Buffer.from(piece));
  return Buffer.concat(parts);
}

describe('zstd without a usable zstd program', { skip: toolsMissing(['zstd'], 'the test input is made with it') }, () => {
  const content = randomBytes(200_000);
  let compressed: Buffer;
  const saved = { path: process.env.PATH, decoder: process.env.UNIONCTL_ZSTD };
  const bin = mkdtempSync('/tmp/unionctl-test-zstd-bin-');
  before(() => {
    compressed = execFileSync('zstd', ['-q', '-c', '--check'], { input: content });
    writeFileSync(join(bin, 'zstd'), '#!/nonexistent/interpreter\n');
    chmodSync(join(bin, 'zstd'), 0o755);
    process.env.PATH = bin;
    delete process.env.UNIONCTL_ZSTD;
  });
  after(() => {
    process.env.PATH = saved.path;
    if (saved.decoder === undefined) delete process.env.UNIONCTL_ZSTD;
    else process.env.UNIONCTL_ZSTD = saved.decoder;
    rmSync(bin, { recursive: true, force: true });
  });

  it('falls back to fzstd when the program on PATH cannot be started, and forgets the program', async () => {
    assert.equal(zstdProgram(), join(bin, 'zstd'), 'found on PATH');
    assert.equal(zstdDecoder(), 'native');
    assert.ok((await decode(compressed)).equals(content));
    assert.equal(zstdProgram(), undefined, 'remembered as missing');
    assert.equal(zstdDecoder(), 'js');
    assert.ok((await decode(compressed)).equals(content));
  });

  it('UNIONCTL_ZSTD=native without a program: UNSUPPORTED, naming what to install', async () => {
    process.env.UNIONCTL_ZSTD = 'native';
    await assert.rejects(decode(compressed), (e: unknown) => {
      assert.ok(e instanceof UnionctlError, String(e));
      assert.equal(e.code, 'UNSUPPORTED');
      assert.match(e.message, /no zstd program on PATH/);
      assert.match(e.hint ?? '', /apt-get install zstd/);
      return true;
    });
    process.env.UNIONCTL_ZSTD = 'fast';
    await assert.rejects(decode(compressed), (e: unknown) => e instanceof UnionctlError && e.code === 'BAD_OPTION');
    process.env.UNIONCTL_ZSTD = 'js';
    assert.ok((await decode(compressed)).equals(content));
  });
});
