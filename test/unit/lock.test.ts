import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnionctlError } from '../../src/errors.js';
import { withFileLock } from '../../src/graph/lock.js';

const lockModule = new URL('../../src/graph/lock.js', import.meta.url).href;
const dir = mkdtempSync(join(tmpdir(), 'unionctl-lock-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const freshLock = () => join(dir, `lock-${++n}`);

/**
 * A child node process that takes the lock, prints "locked", appends "child-in"/"child-out" to
 * `log` around a hold of `holdMs` (forever when undefined), then exits.
 */
function holdInChild(lockPath: string, log: string, holdMs?: number): { child: ChildProcess; locked: Promise<void> } {
  const code = `
    import { appendFileSync } from 'node:fs';
    import { withFileLock } from ${JSON.stringify(lockModule)};
    await withFileLock(${JSON.stringify(lockPath)}, async () => {
      appendFileSync(${JSON.stringify(log)}, 'child-in\\n');
      process.stdout.write('locked\\n');
      await new Promise((r) => ${holdMs === undefined ? 'setInterval(() => {}, 1000)' : `setTimeout(r, ${holdMs})`});
      appendFileSync(${JSON.stringify(log)}, 'child-out\\n');
    });`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const locked = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('locked') && resolve());
    child.once('exit', (code) => reject(new Error(`lock holder exited early (${code})`)));
  });
  return { child, locked };
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

describe('withFileLock', () => {
  it('runs concurrent callers in one process one at a time, in call order', async () => {
    const lock = freshLock();
    const events: string[] = [];
    let inside = 0;
    await Promise.all(
      [0, 1, 2, 3, 4].map((i) =>
        withFileLock(lock, async () => {
          inside += 1;
          assert.equal(inside, 1, 'two callers inside the lock at once');
          events.push(`in${i}`);
          await sleep(5);
          events.push(`out${i}`);
          inside -= 1;
        }),
      ),
    );
    assert.deepEqual(events, ['in0', 'out0', 'in1', 'out1', 'in2', 'out2', 'in3', 'out3', 'in4', 'out4']);
  });

  it('returns the value of fn and releases the lock when fn throws', async () => {
    const lock = freshLock();
    await assert.rejects(
      withFileLock(lock, async () => Promise.reject(new Error('boom'))),
      /boom/,
    );
    assert.equal(await withFileLock(lock, async () => 42, { timeoutMs: 500 }), 42);
  });

  it('is not reentrant: a call on the same lock from inside fn waits for fn to end', async () => {
    const lock = freshLock();
    await assert.rejects(
      withFileLock(lock, () => withFileLock(lock, async () => 'nested', { timeoutMs: 150 })),
      (e: unknown) => e instanceof UnionctlError && e.code === 'LOCKED',
    );
    // Not awaited inside: it runs after fn, on its own.
    const order: string[] = [];
    let nested!: Promise<number>;
    await withFileLock(lock, async () => {
      nested = withFileLock(lock, async () => order.push('nested'));
      await sleep(20);
      order.push('outer-end');
    });
    await nested;
    assert.deepEqual(order, ['outer-end', 'nested']);
  });

  it('never lets sibling tasks started inside a held lock overlap, with each other or with the holder', async () => {
    const lock = freshLock();
    let inside = 0;
    let maxInside = 0;
    const critical = async () => {
      inside += 1;
      maxInside = Math.max(maxInside, inside);
      await sleep(3);
      inside -= 1;
    };
    let siblings!: Promise<unknown>;
    await withFileLock(lock, async () => {
      await critical();
      // What the old reentrant lock let through: Promise.all of two callers from inside the holder.
      siblings = Promise.all([withFileLock(lock, critical), withFileLock(lock, critical), withFileLock(lock, critical)]);
      await critical();
    });
    await siblings;
    assert.equal(maxInside, 1);
  });

  it('queues calls on another path made inside fn like any other', async () => {
    const a = freshLock();
    const b = freshLock();
    const order: string[] = [];
    await withFileLock(a, async () => {
      const other = withFileLock(b, async () => order.push('b-from-outside'));
      await withFileLock(b, async () => order.push('b-inside-a'));
      await other;
    });
    assert.deepEqual(order, ['b-from-outside', 'b-inside-a']);
  });

  it('times out with LOCKED when another caller in this process holds the lock', async () => {
    const lock = freshLock();
    let release!: () => void;
    const holding = withFileLock(lock, () => new Promise<void>((r) => (release = r)));
    await sleep(10);
    await assert.rejects(
      withFileLock(lock, async () => 'never', { timeoutMs: 100 }),
      (e: unknown) => {
        assert.ok(e instanceof UnionctlError);
        assert.equal(e.code, 'LOCKED');
        assert.match(e.message, new RegExp(lock));
        assert.match(e.message, new RegExp(`pid ${process.pid}`));
        return true;
      },
    );
    release();
    await holding;
    // The queue is intact after the timeout.
    assert.equal(await withFileLock(lock, async () => 'after', { timeoutMs: 500 }), 'after');
  });

  it('excludes another process: waits until it has released the lock', async () => {
    const lock = freshLock();
    const log = join(dir, `log-${n}`);
    const { child, locked } = holdInChild(lock, log, 400);
    try {
      await locked;
      await withFileLock(lock, async () => appendFileSync(log, 'parent-in\n'), { timeoutMs: 10_000 });
      assert.deepEqual(readFileSync(log, 'utf8').trim().split('\n'), ['child-in', 'child-out', 'parent-in']);
    } finally {
      child.kill('SIGKILL');
      await exited(child);
    }
  });

  it('times out with LOCKED naming the process that holds the lock', async () => {
    const lock = freshLock();
    const { child, locked } = holdInChild(lock, join(dir, `log-${n}`));
    try {
      await locked;
      const started = Date.now();
      await assert.rejects(
        withFileLock(lock, async () => 'never', { timeoutMs: 300 }),
        (e: unknown) => {
          assert.ok(e instanceof UnionctlError);
          assert.equal(e.code, 'LOCKED');
          assert.match(e.message, new RegExp(`held by process ${child.pid}`));
          assert.ok(e.hint);
          return true;
        },
      );
      assert.ok(Date.now() - started >= 290, 'gave up before the timeout');
    } finally {
      child.kill('SIGKILL');
      await exited(child);
    }
  });

  it('is free again as soon as the holding process is killed', async () => {
    const lock = freshLock();
    const { child, locked } = holdInChild(lock, join(dir, `log-${n}`));
    await locked;
    child.kill('SIGKILL');
    await exited(child);
    assert.equal(await withFileLock(lock, async () => 'mine', { timeoutMs: 1000 }), 'mine');
  });

  it('creates the lock file and its directory', async () => {
    const lock = join(dir, 'sub', 'dir', 'store.lock');
    await withFileLock(lock, async () => undefined);
    assert.equal(readFileSync(lock, 'utf8'), '');
  });
});
