/**
 * How the CLI names layers and mounts, as docker and podman users expect (issue 14, points 6-7):
 * tables show 12-character ids (`--no-trunc` the whole ones); every command that takes a layer takes
 * a unique prefix, and an ambiguous one is an error listing the candidates; `mount --rw` makes a
 * writable layer whose id shares its first 12 characters with no other layer, or the one `--name`
 * gives; `umount` takes what `mount` takes, several at once or `--all`; `mounts` lists what is
 * mounted, with the processes that hold it. Run with --driver vfs and overlay2 on a private tmpfs.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { runCli, showResult, type CliResult } from '../helpers/cli.js';
import { mountsUnder } from '../helpers/mounts.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';

const storeModule = new URL('../../src/index.js', import.meta.url).href;

function ok(r: CliResult): string {
  assert.equal(r.status, 0, showResult(r));
  return r.stdout;
}

function fails(r: CliResult, mention: RegExp): string {
  assert.equal(r.status, 1, showResult(r));
  assert.equal(r.stdout, '', showResult(r));
  assert.match(r.stderr, mention, showResult(r));
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  return r.stderr;
}

/** A tar with one file, made by GNU tar. */
function layerTar(dir: string, name: string, content: string): string {
  const src = join(dir, `${name}-src`);
  mkdirSync(src);
  writeFileSync(join(src, name), content);
  const tar = join(dir, `${name}.tar`);
  assert.equal(spawnSync('tar', ['-C', src, '-cf', tar, '.']).status, 0);
  return tar;
}

/** Where a writable layer's view is: Docker's paths. */
function viewOf(root: string, driver: string, id: string): string {
  return driver === 'vfs' ? join(root, 'vfs', 'dir', id) : join(root, driver, id, 'merged');
}

/** The first column of a table's rows (its header dropped). */
function firstColumn(table: string): string[] {
  return table
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => l.split(/\s+/)[0]!);
}

let scratch: Scratch | undefined;

before(() => {
  scratch = makeScratch({ size: '512m' });
});

after(() => scratch?.dispose());

for (const driver of ['vfs', 'overlay2']) {
  describe(`layer ids and mounts on ${driver}`, () => {
    let root = '';
    let g: string[] = [];
    const cli = (...args: string[]) => runCli([...g, ...args]);
    let base = '';
    let other = '';

    before(() => {
      const dir = join(scratch!.dir, driver);
      mkdirSync(dir);
      root = join(dir, 'root');
      g = ['--root', root, '--driver', driver];
      // Two generated ids that share a first character or not: prefixes are found by search below.
      base = ok(cli('import', layerTar(dir, 'base', 'base\n'))).trim();
      other = ok(cli('import', '--parent', base.slice(0, 12), layerTar(dir, 'other', 'other\n'))).trim();
    });

    after(() => {
      runCli([...g, 'cleanup']);
      assert.deepEqual(mountsUnder(root), [], 'nothing left mounted');
    });

    it('ls shows 12-character ids, --no-trunc whole ones, and import --parent took a prefix', () => {
      assert.match(base, /^[0-9a-f]{64}$/);
      const table = ok(cli('ls'));
      assert.deepEqual(firstColumn(table).sort(), [base.slice(0, 12), other.slice(0, 12)].sort());
      assert.ok(table.includes(`${other.slice(0, 12)}  ${base.slice(0, 12)} `), `the parent column is short too:\n${table}`);
      assert.doesNotMatch(table, new RegExp(base));
      assert.deepEqual(ok(cli('ls', '-q')).trim().split('\n').sort(), [base.slice(0, 12), other.slice(0, 12)].sort());
      assert.deepEqual(
        ok(cli('ls', '--quiet', '--no-trunc'))
          .trim()
          .split('\n')
          .sort(),
        [base, other].sort(),
      );
      const whole = ok(cli('ls', '--no-trunc'));
      assert.deepEqual(firstColumn(whole).sort(), [base, other].sort());
      assert.match(whole, /sha256:[0-9a-f]{64}/);
      const records = JSON.parse(ok(cli('--json', 'ls'))) as Array<{ id: string; parent?: string }>;
      assert.equal(records.find((r) => r.id === other)?.parent, base);
    });

    it('a prefix names a layer for diff, changes, size and branches; an unknown one is NOT_FOUND', () => {
      const short = other.slice(0, 12);
      assert.deepEqual(JSON.parse(ok(cli('--json', 'changes', short))), [{ path: '/other', kind: 'A', patch: null }]);
      assert.deepEqual(JSON.parse(ok(cli('--json', 'size', short, '--parent', base.slice(0, 8)))), { id: other, size: 6 });
      const branches = JSON.parse(ok(cli('--json', 'branches', short))) as Array<{ layer: string }>;
      assert.equal(branches[0]!.layer, other);
      const diff = cli('diff', short, '-o', join(scratch!.dir, driver, 'other-diff.tar'));
      ok(diff);
      fails(cli('changes', 'ffffffffffffzz'), /^unionctl: no layer or image ffffffffffffzz/);
    });

    it('an ambiguous prefix is an error listing the layers it starts, and changes nothing', () => {
      ok(cli('create', '--id', 'web-1'));
      ok(cli('create', '--id', 'web-2'));
      try {
        const err = fails(cli('rm', 'web'), /^unionctl: layer id prefix web is ambiguous: it starts 2 ids \(web-1, web-2\)/);
        assert.match(err, /hint: give more characters of the id/);
        fails(cli('mount', 'web'), /prefix web is ambiguous: it starts 2 ids \(web-1, web-2\)/);
        assert.equal((JSON.parse(ok(cli('--json', 'ls'))) as unknown[]).length, 4, 'nothing was removed');
        // A whole id wins over the longer ids it starts.
        ok(cli('create', '--id', 'web'));
        assert.equal(ok(cli('rm', 'web')).trim(), 'web');
      } finally {
        // rm reports the layer it cannot remove and still removes the others.
        const r = cli('rm', 'web-1', 'no-such', 'web-2');
        assert.equal(r.status, 1, showResult(r));
        assert.deepEqual(r.stdout.trim().split('\n'), ['web-1', 'web-2']);
        assert.match(r.stderr, /^unionctl: layer no-such does not exist\n {2}hint: /);
      }
      assert.equal((JSON.parse(ok(cli('--json', 'ls'))) as unknown[]).length, 2);
    });

    it('rm -f releases the mounts of the layer first; rm without it refuses a mounted one', () => {
      ok(cli('create', '--rw', '--parent', other, '--id', 'busy'));
      const path = ok(cli('mount', 'busy')).trim().split('\n').at(-1)!;
      ok(cli('mount', 'busy'));
      // A writable layer's size in ls is what it holds now, the figure size gives.
      writeFileSync(join(path, 'written'), Buffer.alloc(1000));
      assert.deepEqual(JSON.parse(ok(cli('--json', 'size', 'busy'))), { id: 'busy', size: 1000 });
      const listed = (JSON.parse(ok(cli('--json', 'ls'))) as Array<{ id: string; size: number }>).find((l) => l.id === 'busy');
      assert.equal(listed?.size, 1000);
      assert.match(ok(cli('ls')), /^busy\s+\S+\s+rw\s+1000 B\s/m);
      fails(cli('rm', 'busy'), /^unionctl: layer busy is mounted \(2 mounts\)/);
      assert.deepEqual(JSON.parse(ok(cli('--json', 'rm', '-f', 'busy'))), ['busy']);
      assert.deepEqual(JSON.parse(ok(cli('--json', 'mounts'))), []);
      assert.deepEqual(mountsUnder(join(root, driver)), [], 'its union is unmounted');
    });

    it('mount --rw makes a layer whose short id is its own, or the one --name gives', () => {
      const out = ok(cli('mount', '--rw', other.slice(0, 12)))
        .trim()
        .split('\n');
      const child = out[0]!.replace(/^layer /, '');
      assert.match(child, /^[0-9a-f]{64}$/);
      assert.notEqual(child.slice(0, 12), other.slice(0, 12), 'the writable layer does not look like its parent');
      const named = ok(cli('mount', '--rw', '--name', 'app', other.slice(0, 12)))
        .trim()
        .split('\n');
      assert.equal(named[0], 'layer app');
      assert.equal(named[1], viewOf(root, driver, 'app'));
      fails(cli('mount', '--rw', '--name', 'app', other), /^unionctl: layer app already exists|app/);
      fails(cli('mount', '--name', 'x', other), /a name is only given to the writable layer mount --rw makes/);
      // Both are writable children of `other`, mounted once each.
      const ls = JSON.parse(ok(cli('--json', 'ls'))) as Array<{ id: string; parent?: string; writable: boolean }>;
      for (const id of [child, 'app']) {
        const rec = ls.find((l) => l.id === id);
        assert.deepEqual([rec?.parent, rec?.writable], [other, true], id);
      }
      // umount takes several, by prefix; rm then removes them.
      ok(cli('umount', child.slice(0, 12), 'app'));
      assert.deepEqual(JSON.parse(ok(cli('--json', 'mounts'))), []);
      assert.deepEqual(
        ok(cli('rm', child.slice(0, 12), 'app'))
          .trim()
          .split('\n'),
        [child, 'app'],
      );
    });

    it('mounts lists every mount with its count and holder; umount --all releases what unionctl mount made', async () => {
      ok(cli('mount', other.slice(0, 12)));
      ok(cli('mount', other));
      ok(cli('create', '--rw', '--parent', other.slice(0, 12), '--id', 'ctr'));
      ok(cli('mount', 'ctr'));
      const holder = await holdInProcess(root, driver, 'ctr');
      try {
        const entries = JSON.parse(ok(cli('--json', 'mounts'))) as Array<Record<string, unknown>>;
        assert.deepEqual(
          entries.map((e) => [e.id, e.readOnly, e.mounts, e.processes]),
          [
            [other, true, 2, []],
            ['ctr', false, 1, [{ pid: holder.pid, count: 1 }]],
          ].sort((a, b) => (String(a[0]) < String(b[0]) ? -1 : 1)),
        );
        const ctr = entries.find((e) => e.id === 'ctr')!;
        assert.equal(ctr.path, viewOf(root, driver, 'ctr'));
        // A vfs layer's view is its own directory: nothing is mounted for it.
        assert.equal(ctr.mounted, driver !== 'vfs');
        assert.deepEqual(ok(cli('mounts', '-q')).trim().split('\n').sort(), [other.slice(0, 12), 'ctr'].sort());
        const table = ok(cli('mounts'));
        assert.match(table, /^LAYER\s+MODE\s+MOUNTS\s+PROCESSES\s+PATH$/m);
        assert.match(
          table,
          new RegExp(`^${other.slice(0, 12)}\\s+ro\\s+2\\s+-\\s+${root}/driver-state/${driver}/read-only/mnt/${other}$`, 'm'),
        );
        assert.match(table, new RegExp(`^ctr\\s+rw\\s+1\\s+${holder.pid}\\s+`, 'm'));
        fails(cli('umount', '--all', 'ctr'), /--all releases every mount: give no layers with it/);
        fails(cli('umount'), /umount needs a layer or image, or --all/);
        // --all gives back the three unionctl mounts; the process's hold stays.
        assert.deepEqual(JSON.parse(ok(cli('--json', 'umount', '--all'))), { released: [other, 'ctr'].sort() });
        assert.deepEqual(
          (JSON.parse(ok(cli('--json', 'mounts'))) as Array<Record<string, unknown>>).map((e) => [e.id, e.mounts, e.processes]),
          [['ctr', 0, [{ pid: holder.pid, count: 1 }]]],
        );
        fails(cli('umount', 'ctr'), /layer ctr is not mounted/);
      } finally {
        await holder.release();
      }
      assert.deepEqual(JSON.parse(ok(cli('--json', 'mounts'))), []);
      ok(cli('rm', 'ctr'));
    });
  });
}

/** A process that opens the store and holds the layer mounted in-process until released. */
async function holdInProcess(root: string, driver: string, id: string): Promise<{ pid: number; release: () => Promise<void> }> {
  const code = `
    import { openStore } from ${JSON.stringify(storeModule)};
    const store = await openStore({ root: ${JSON.stringify(root)}, driver: ${JSON.stringify(driver)} });
    await store.driver.get(${JSON.stringify(id)});
    process.stdout.write('held\\n');
    process.stdin.once('data', async () => {
      await store.driver.put(${JSON.stringify(id)});
      process.exit(0);
    });`;
  const child: ChildProcess = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('held\n')) resolve();
    });
    child.once('exit', (c, sig) => reject(new Error(`holder exited (${c ?? sig}) before holding ${id}`)));
  });
  return {
    pid: child.pid!,
    release: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.stdin!.write('go\n');
      await exited;
    },
  };
}
