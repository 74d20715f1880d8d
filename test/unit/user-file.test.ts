/**
 * src/sys/user-file.ts: output files appear complete or not at all, and a stopped process leaves
 * no temp file (the CLI tests cover what each command does with PATH).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnionctlError } from '../../src/errors.js';
import { createOutputFile, writeOutputFile } from '../../src/sys/user-file.js';

const USER_FILE = fileURLToPath(new URL('../../src/sys/user-file.js', import.meta.url));

let base = '';
let n = 0;
/** A fresh empty directory. */
function freshDir(): string {
  const dir = join(base, `d${n++}`);
  mkdirSync(dir);
  return dir;
}

before(() => {
  base = mkdtempSync('/tmp/unionctl-test-user-file-');
});

after(() => rmSync(base, { recursive: true, force: true }));

describe('writeOutputFile', () => {
  it('renames the complete file into place and returns what the writer returned', async () => {
    const dir = freshDir();
    const path = join(dir, 'out');
    writeFileSync(path, 'old');
    const result = await writeOutputFile(path, async (out) => {
      await pipeline(Readable.from([Buffer.from('new '), Buffer.from('content')]), out);
      assert.equal(readFileSync(path, 'utf8'), 'old', 'PATH untouched while the file is written');
      return 42;
    });
    assert.equal(result, 42);
    assert.equal(readFileSync(path, 'utf8'), 'new content');
    assert.deepEqual(readdirSync(dir), ['out']);
  });

  it('ends a stream the writer left open', async () => {
    const dir = freshDir();
    await writeOutputFile(join(dir, 'out'), async (out) => {
      out.write('partly');
    });
    assert.equal(readFileSync(join(dir, 'out'), 'utf8'), 'partly');
  });

  it("a writer's failure is passed on as it is; PATH as it was, no temp file", async () => {
    const dir = freshDir();
    const path = join(dir, 'out');
    writeFileSync(path, 'old');
    const boom = new Error('the source failed');
    await assert.rejects(
      writeOutputFile(path, async (out) => {
        out.write('half of it');
        throw boom;
      }),
      (e) => e === boom,
    );
    assert.equal(readFileSync(path, 'utf8'), 'old');
    assert.deepEqual(readdirSync(dir), ['out']);
  });

  it('PATH turned into a symlink while the file was written: refused at the rename, the temp file removed', async () => {
    const dir = freshDir();
    const path = join(dir, 'out');
    const target = join(dir, 'target');
    writeFileSync(target, 'keep');
    await assert.rejects(
      writeOutputFile(path, async (out) => {
        symlinkSync(target, path);
        out.end('data');
      }),
      (e) => e instanceof UnionctlError && e.code === 'USAGE' && /symbolic link/.test(e.message),
    );
    assert.equal(readFileSync(target, 'utf8'), 'keep');
    assert.deepEqual(readdirSync(dir).sort(), ['out', 'target']);
    unlinkSync(path);
  });

  it('abort() removes the temp file; a temp name never follows or reuses what is there', () => {
    const dir = freshDir();
    const file = createOutputFile(join(dir, 'out'));
    assert.ok(file.tempPath.startsWith(join(dir, '.out.')), file.tempPath);
    assert.ok(existsSync(file.tempPath));
    file.abort();
    file.abort();
    assert.deepEqual(readdirSync(dir), []);
  });
});

describe('removeIfInterrupted', () => {
  /** Runs a node script that makes `temp` and registers it, then waits; returns how it ended. */
  async function stopped(
    script: string,
    signal: NodeJS.Signals,
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null; temp: string }> {
    const temp = join(freshDir(), 'temp');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, USER_FILE, temp], { stdio: 'ignore' });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, sig) => resolve({ code, signal: sig })),
    );
    const deadline = Date.now() + 10_000;
    while (!existsSync(join(temp, 'ready')) && Date.now() < deadline) await sleep(5);
    child.kill(signal);
    return { ...(await exited), temp };
  }

  const registers = `
    import { mkdirSync, writeFileSync } from 'node:fs';
    const { removeIfInterrupted } = await import(process.argv[1]);
    const temp = process.argv[2];
    mkdirSync(temp);
    removeIfInterrupted(temp);
    writeFileSync(temp + '/ready', '');
    setInterval(() => {}, 1000);`;

  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    it(`${signal}: the path is removed and the process still dies by ${signal}`, async () => {
      const r = await stopped(registers, signal);
      assert.equal(r.signal, signal);
      assert.ok(!existsSync(r.temp));
    });
  }

  it('another handler of the signal keeps the say: the path is removed, the process ends as that handler decides', async () => {
    const r = await stopped(`process.on('SIGINT', () => setTimeout(() => process.exit(7), 20));${registers}`, 'SIGINT');
    assert.equal(r.code, 7);
    assert.ok(!existsSync(r.temp));
  });

  it('process.exit removes it too; a path that was let go is kept', async () => {
    const dir = freshDir();
    const script = `
      import { mkdirSync } from 'node:fs';
      const { removeIfInterrupted } = await import(process.argv[1]);
      mkdirSync(process.argv[2]);
      mkdirSync(process.argv[3]);
      removeIfInterrupted(process.argv[2]);
      removeIfInterrupted(process.argv[3])();
      process.exit(3);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, USER_FILE, join(dir, 'gone'), join(dir, 'kept')]);
    const code = await new Promise((resolve) => child.once('exit', resolve));
    assert.equal(code, 3);
    assert.deepEqual(readdirSync(dir), ['kept']);
  });

  it('a path let go is not removed at a signal, and the signal still ends the process', async () => {
    const r = await stopped(registers.replace('removeIfInterrupted(temp);', 'removeIfInterrupted(temp)();'), 'SIGTERM');
    assert.equal(r.signal, 'SIGTERM');
    assert.ok(existsSync(r.temp));
  });
});
