/**
 * When a store transaction needs its journal (src/graph/transaction.ts): what each commit writes,
 * watched with strace in a child process that runs one transaction — the journal's files touched
 * or not, and the fsyncs made. A journal costs four fsyncs more than a single change, so the
 * commits that can do without one must, and the others must not.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { toolsMissing } from '../helpers/requires.js';

const TRANSACTION_MODULE = new URL('../../src/graph/transaction.js', import.meta.url).href;

type Step = ['write', string, boolean] | ['delete', string, boolean];

interface Traced {
  /** The paths the commit opened, renamed or unlinked under journal/. */
  journalTouched: boolean;
  fsyncs: number;
}

/** Runs one transaction of `steps` over `root` in a child under strace. */
function traceTransaction(root: string, steps: Step[]): Traced {
  const trace = join(root, '..', 'trace.txt');
  const script = `
    import { runTransaction } from ${JSON.stringify(TRANSACTION_MODULE)};
    const [root, steps] = [process.argv[1], JSON.parse(process.argv[2])];
    await runTransaction(root, root + '/store.lock', async (tx) => {
      for (const [op, path, durable] of steps) {
        if (op === 'write') tx.write(path, 'new ' + path, { durable });
        else tx.delete(path, { durable });
      }
    });`;
  execFileSync('strace', [
    '-qq',
    '-e',
    'trace=openat,rename,unlink,fsync,fdatasync',
    '-o',
    trace,
    process.execPath,
    '--input-type=module',
    '-e',
    script,
    root,
    JSON.stringify(steps),
  ]);
  const lines = readFileSync(trace, 'utf8').split('\n');
  // Only what the commit did: the trace from the lock file's opening on.
  const fromLock = lines.slice(lines.findIndex((l) => l.includes('store.lock')));
  return {
    journalTouched: fromLock.some((l) => l.includes(`${root}/journal/`)),
    // A call strace saw interrupted by another thread's is split: "fsync(19 <unfinished ...>", then
    // "<... fsync resumed>) = 0". node's exit fsyncs stdout and stderr: EINVAL on a pipe, not counted.
    fsyncs: fromLock.filter((l) => /\bf(data)?sync\(\d+\)\s*= 0|<\.\.\. f(data)?sync resumed>.*= 0/.test(l)).length,
  };
}

describe('store transactions: the journal only when a commit needs one', { skip: toolsMissing(['strace']) }, () => {
  let dir = '';
  let root = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'unionctl-tx-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A fresh root holding a/old and b/old. */
  const freshRoot = (name: string) => {
    root = join(dir, name);
    for (const sub of ['a', 'b']) {
      execFileSync('mkdir', ['-p', join(root, sub)]);
      writeFileSync(join(root, sub, 'old'), 'old');
    }
    return root;
  };

  it('one durable change: no journal, two fsyncs (the file and its directory)', () => {
    const r = freshRoot('single');
    assert.deepEqual(traceTransaction(r, [['write', 'a/new', true]]), { journalTouched: false, fsyncs: 2 });
    assert.equal(readFileSync(join(r, 'a/new'), 'utf8'), 'new a/new');
  });

  it('two durable changes: journaled (the positive control)', () => {
    const r = freshRoot('two');
    const traced = traceTransaction(r, [
      ['write', 'a/new', true],
      ['delete', 'b/old', true],
    ]);
    assert.equal(traced.journalTouched, true);
    assert.ok(traced.fsyncs >= 6, `a journal and its changes: ${traced.fsyncs} fsyncs`);
    assert.ok(existsSync(join(r, 'a/new')) && !existsSync(join(r, 'b/old')) && !existsSync(join(r, 'journal')));
  });

  it('one durable change and deletions that need not be durable: no journal, no fsync for the deletions', () => {
    const r = freshRoot('lax');
    const traced = traceTransaction(r, [
      ['delete', 'b/old', false],
      ['write', 'a/new', true],
    ]);
    assert.deepEqual(traced, { journalTouched: false, fsyncs: 2 });
    assert.ok(existsSync(join(r, 'a/new')) && !existsSync(join(r, 'b/old')));
  });

  it('a non-durable write beside a durable change stays journaled (they must hold together)', () => {
    const r = freshRoot('lax-write');
    assert.equal(
      traceTransaction(r, [
        ['write', 'a/new', false],
        ['write', 'b/new', true],
      ]).journalTouched,
      true,
    );
  });

  it('the deletion of a file that is not there is no change: the write beside it needs no journal', () => {
    const r = freshRoot('absent');
    assert.deepEqual(
      traceTransaction(r, [
        ['delete', 'b/never-there', true],
        ['write', 'a/new', true],
      ]),
      { journalTouched: false, fsyncs: 2 },
    );
  });
});

describe("store transactions: file modes (a driver layout file a repair rewrites keeps Docker's)", () => {
  let root = '';
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'unionctl-tx-mode-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const modeOf = (path: string) => statSync(join(root, path)).mode & 0o7777;

  it('writes each file with the mode given (journaled or not), 0600 without one', async () => {
    const { runTransaction } = (await import(TRANSACTION_MODULE)) as typeof import('../../src/graph/transaction.js');
    await runTransaction(root, join(root, 'store.lock'), async (tx) => tx.write('one/link', 'A', { mode: 0o644 }));
    await runTransaction(root, join(root, 'store.lock'), async (tx) => {
      tx.write('two/lower', 'l/A', { mode: 0o644 });
      tx.write('two/record', '{}');
    });
    assert.deepEqual([modeOf('one/link'), modeOf('two/lower'), modeOf('two/record')], [0o644, 0o644, 0o600]);
  });

  it('a journal left by a crash is replayed with its modes; one with a mode that is none is CORRUPT', async () => {
    const { replayJournals } = (await import(TRANSACTION_MODULE)) as typeof import('../../src/graph/transaction.js');
    mkdirSync(join(root, 'journal'), { recursive: true });
    const change = { path: 'three/lower', content: 'l/B', durable: true, mode: 0o644 };
    writeFileSync(join(root, 'journal', 'crashed.json'), JSON.stringify({ changes: [change] }));
    assert.equal(replayJournals(root).length, 1);
    assert.equal(modeOf('three/lower'), 0o644);
    mkdirSync(join(root, 'journal'), { recursive: true });
    writeFileSync(join(root, 'journal', 'bad.json'), JSON.stringify({ changes: [{ ...change, mode: 0o17777 }] }));
    assert.throws(
      () => replayJournals(root),
      (e: Error & { code?: string }) => e.code === 'CORRUPT',
    );
    rmSync(join(root, 'journal'), { recursive: true });
  });
});
