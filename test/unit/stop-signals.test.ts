/**
 * src/sys/stop-signals.ts: the tasks run before a stop signal ends the process, the process still
 * ends by that signal, and a process that handles the signal itself keeps the say.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

const STOP_SIGNALS_MODULE = fileURLToPath(new URL('../../src/sys/stop-signals.js', import.meta.url));

let base = '';
let n = 0;
before(() => {
  base = mkdtempSync('/tmp/unionctl-test-stop-signals-');
});
after(() => rmSync(base, { recursive: true, force: true }));

interface Ending {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** What the child wrote to its log file (one word per line). */
  log: string[];
}

/**
 * Runs `body` in a child (`beforeStopSignal`, `stopRequested`, `log(word)` and `ready()` in scope),
 * sends `signal` once it called ready(), and says how it ended.
 */
async function stopped(body: string, signal: NodeJS.Signals): Promise<Ending> {
  const dir = join(base, `c${n++}`);
  const script = `
    import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
    const { beforeStopSignal, stopRequested } = await import(process.argv[1]);
    const dir = process.argv[2];
    mkdirSync(dir);
    const log = (word) => appendFileSync(dir + '/log', word + '\\n');
    const ready = () => writeFileSync(dir + '/ready', '');
    ${body}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, STOP_SIGNALS_MODULE, dir], { stdio: 'ignore' });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, sig) => resolve({ code, signal: sig })),
  );
  const deadline = Date.now() + 10_000;
  while (!existsSync(join(dir, 'ready')) && Date.now() < deadline) await sleep(5);
  child.kill(signal);
  const ending = await exited;
  const logFile = join(dir, 'log');
  const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').filter(Boolean) : [];
  return { ...ending, log };
}

describe('beforeStopSignal', () => {
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    it(`${signal}: every task runs (async ones awaited), then the process ends by ${signal}`, async () => {
      const r = await stopped(
        `beforeStopSignal(() => log('sync'));
         beforeStopSignal(async () => { log('requested-' + stopRequested()); await new Promise((r) => setTimeout(r, 100)); log('async-done'); });
         ready();
         setInterval(() => {}, 1000);`,
        signal,
      );
      assert.equal(r.signal, signal);
      assert.deepEqual([...r.log].sort(), ['async-done', `requested-${signal}`, 'sync']);
    });
  }

  it('a task that fails keeps neither the other tasks nor the signal back', async () => {
    const r = await stopped(
      `beforeStopSignal(() => { throw new Error('no'); });
       beforeStopSignal(async () => { throw new Error('no either'); });
       beforeStopSignal(() => log('ran'));
       ready();
       setInterval(() => {}, 1000);`,
      'SIGINT',
    );
    assert.equal(r.signal, 'SIGINT');
    assert.deepEqual(r.log, ['ran']);
  });

  it('a handler that removes itself when called, registered before the first task, still keeps the say', async () => {
    const r = await stopped(
      `const own = () => { process.off('SIGTERM', own); log('own'); setTimeout(() => process.exit(0), 20); };
       process.on('SIGTERM', own);
       beforeStopSignal(() => log('task'));
       ready();
       setInterval(() => {}, 1000);`,
      'SIGTERM',
    );
    assert.equal(r.code, 0);
    assert.deepEqual(r.log, ['own']);
  });

  it('a process that handles the signal itself keeps the say: no task runs', async () => {
    const r = await stopped(
      `process.on('SIGTERM', () => { log('own'); setTimeout(() => process.exit(7), 20); });
       beforeStopSignal(() => log('task'));
       ready();
       setInterval(() => {}, 1000);`,
      'SIGTERM',
    );
    assert.equal(r.code, 7);
    assert.deepEqual(r.log, ['own']);
  });

  it('a signal that comes during synchronous work, after which the last task is let go, still ends the process', async () => {
    // Node drops a signal whose listener is removed before the event loop got to it: the module
    // keeps listening, so the process ends by the signal (and the task let go does not run).
    const r = await stopped(
      `const forget = beforeStopSignal(() => log('task'));
       ready();
       const until = Date.now() + 500;
       while (Date.now() < until) {} // the signal comes in here
       forget();
       log('forgotten');
       setInterval(() => {}, 1000);`,
      'SIGINT',
    );
    assert.equal(r.signal, 'SIGINT');
    assert.deepEqual(r.log, ['forgotten']);
  });
});
