/**
 * sys startWorker: our worker threads (the hashing and inflate threads) start under whatever node
 * options the process was started with — inherited where Node allows it, and never refused for
 * an option a worker cannot take (--input-type for a file; V8 options given explicitly).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

const SYS_MODULE = new URL('../../src/sys/index.js', import.meta.url).href;

describe('startWorker: a worker thread under any node options of the process', () => {
  let dir = '';
  let workerFile = '';
  let mainFile = '';
  const script = (worker: string) => `
    import { startWorker } from ${JSON.stringify(SYS_MODULE)};
    import { pathToFileURL } from 'node:url';
    const worker = startWorker(pathToFileURL(${JSON.stringify(worker)}), { hello: 'there' });
    worker.on('message', (m) => { console.log(JSON.stringify(m)); void worker.terminate(); });
    worker.on('error', (e) => { console.error(e.code, e.message); process.exitCode = 1; });`;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'unionctl-worker-'));
    workerFile = join(dir, 'worker.mjs');
    writeFileSync(
      workerFile,
      `import { parentPort, workerData } from 'node:worker_threads';
       parentPort.postMessage({ data: workerData, execArgv: process.execArgv });`,
    );
    mainFile = join(dir, 'main.mjs');
    writeFileSync(mainFile, script(workerFile));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** What the worker answered when the process ran with `nodeOptions`, from a file or from `-e`. */
  const run = (nodeOptions: string[], from: 'file' | 'eval') => {
    const args = from === 'file' ? [...nodeOptions, mainFile] : [...nodeOptions, '--input-type=module', '-e', script(workerFile)];
    const out = execFileSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const line = out.split('\n').find((l) => l.startsWith('{'));
    assert.ok(line !== undefined, `no answer from the worker in: ${out}`);
    return JSON.parse(line) as { data: unknown; execArgv: string[] };
  };

  it('inherits the options when it can, V8 ones included', () => {
    const answer = run(['--trace-gc', '--max-old-space-size=512'], 'file');
    assert.deepEqual(answer.data, { hello: 'there' });
    assert.deepEqual(answer.execArgv, ['--trace-gc', '--max-old-space-size=512']);
  });

  it('starts under --input-type=module -e, without that option', () => {
    const answer = run([], 'eval');
    assert.deepEqual(answer.data, { hello: 'there' });
    assert.ok(!answer.execArgv.some((a) => a.startsWith('--input-type')), answer.execArgv.join(' '));
  });

  it('keeps the options a worker accepts under -e', () => {
    const answer = run(['--no-warnings'], 'eval');
    assert.ok(answer.execArgv.includes('--no-warnings'), answer.execArgv.join(' '));
  });

  it('starts under -e with V8 options too (which a worker refuses when given explicitly)', () => {
    const answer = run(['--trace-gc', '--max-old-space-size=512'], 'eval');
    assert.deepEqual(answer.data, { hello: 'there' });
    assert.deepEqual(answer.execArgv, []);
  });
});
