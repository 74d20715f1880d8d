/**
 * storage.conf (issue 14, point 14): the configuration files under the environment and the flags,
 * as `info --json` reports each setting's source; storage options from a file reaching the driver
 * they are for; bad files refused before anything is made; a registry the file lists as insecure
 * pulled from over plain HTTP without --insecure. Nothing here reads or writes /etc/unionctl or the
 * real home: UNIONCTL_CONFIG names one file, XDG_CONFIG_HOME or HOME a scratch dir for the user's.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { registryAvailable, startRegistry, type Registry } from '../../bench/peers/registry.js';
import { SYSTEM_CONFIG } from '../../src/cli/config.js';
import { runCli, showResult, type CliResult } from '../helpers/cli.js';
import { makeScratch, scratchMissing, type Scratch } from '../helpers/scratch.js';
import { SAMPLE_DOCKER } from './images-helpers.js';

interface InfoJson {
  driver: string;
  root: string;
  config: {
    files: Array<{ path: string; loaded: boolean }>;
    settings: Record<'root' | 'driver' | 'storageOpt', { value: unknown; source: string }>;
    registries: Array<{ location: string; insecure: boolean; source: string }>;
  };
}

/** No configuration from the machine or the user running the tests leaks in. */
const CLEAN_ENV = { UNIONCTL_ROOT: undefined, UNIONCTL_DRIVER: undefined, UNIONCTL_CONFIG: undefined };

describe('storage.conf', { skip: scratchMissing }, () => {
  let scratch: Scratch;
  let files = 0;
  /** A config file with `text`; its path. */
  const configFile = (text: string) => {
    const path = join(scratch.dir, `storage-${++files}.conf`);
    writeFileSync(path, text);
    return path;
  };
  const store = (name: string) => join(scratch.dir, name);
  /** The CLI with no configuration but what `env` names (XDG_CONFIG_HOME: an empty dir unless given). */
  const run = (args: string[], env: Record<string, string | undefined> = {}) =>
    runCli(args, { env: { ...CLEAN_ENV, XDG_CONFIG_HOME: join(scratch.dir, 'no-user-config'), ...env } });
  const ok = (r: CliResult) => {
    assert.equal(r.status, 0, showResult(r));
    return r.stdout;
  };
  const info = (args: string[], env: Record<string, string | undefined>) =>
    JSON.parse(ok(run([...args, '--json', 'info'], env))) as InfoJson;

  before(() => {
    scratch = makeScratch();
    for (const name of ['from-file', 'from-env', 'from-flag', 'from-user']) ok(run(['--root', store(name), '--driver', 'vfs', 'create']));
  });

  after(() => scratch?.dispose());

  it('a file sets root and driver; UNIONCTL_ROOT / UNIONCTL_DRIVER override it; flags override both; info says which', () => {
    const UNIONCTL_CONFIG = configFile(`[storage]\nroot = "${store('from-file')}"\ndriver = "vfs"\n`);
    const fromFile = info([], { UNIONCTL_CONFIG });
    assert.equal(fromFile.root, store('from-file'));
    assert.deepEqual(fromFile.config.settings.root, { value: store('from-file'), source: UNIONCTL_CONFIG });
    assert.deepEqual(fromFile.config.settings.driver, { value: 'vfs', source: UNIONCTL_CONFIG });
    assert.deepEqual(fromFile.config.settings.storageOpt, { value: [], source: 'default' });
    assert.deepEqual(
      fromFile.config.files,
      [{ path: UNIONCTL_CONFIG, loaded: true, unreachable: null }],
      'UNIONCTL_CONFIG is read instead of the two files',
    );
    assert.equal(fromFile.driver, 'vfs', "the store info's own fields stay");

    const fromEnv = info([], { UNIONCTL_CONFIG, UNIONCTL_ROOT: store('from-env'), UNIONCTL_DRIVER: 'vfs' });
    assert.deepEqual(fromEnv.config.settings.root, { value: store('from-env'), source: 'env UNIONCTL_ROOT' });
    assert.deepEqual(fromEnv.config.settings.driver, { value: 'vfs', source: 'env UNIONCTL_DRIVER' });

    const fromFlag = info(['--root', store('from-flag'), '--driver', 'vfs'], { UNIONCTL_CONFIG, UNIONCTL_ROOT: store('from-env') });
    assert.equal(fromFlag.root, store('from-flag'));
    assert.deepEqual(fromFlag.config.settings.root, { value: store('from-flag'), source: 'flag --root' });
    assert.deepEqual(fromFlag.config.settings.driver, { value: 'vfs', source: 'flag --driver' });

    const human = ok(run(['info'], { UNIONCTL_CONFIG, UNIONCTL_DRIVER: 'vfs' }));
    assert.match(human, new RegExp(`^  root: ${store('from-file')} \\(from ${UNIONCTL_CONFIG}\\)$`, 'm'));
    assert.match(human, /^ {2}driver: vfs \(from env UNIONCTL_DRIVER\)$/m);
    assert.match(human, new RegExp(`^  config file: ${UNIONCTL_CONFIG} read$`, 'm'));
  });

  it('the per-user file is $XDG_CONFIG_HOME/unionctl/storage.conf, else ~/.config/unionctl/storage.conf; /etc/unionctl/storage.conf is read before it', () => {
    const xdg = join(scratch.dir, 'xdg');
    mkdirSync(join(xdg, 'unionctl'), { recursive: true });
    writeFileSync(join(xdg, 'unionctl', 'storage.conf'), `[storage]\ngraphroot = "${store('from-user')}"\n`);
    const viaXdg = info([], { XDG_CONFIG_HOME: xdg });
    assert.deepEqual(viaXdg.config.settings.root, { value: store('from-user'), source: join(xdg, 'unionctl', 'storage.conf') });
    assert.deepEqual(viaXdg.config.files, [
      { path: SYSTEM_CONFIG, loaded: existsSync(SYSTEM_CONFIG), unreachable: null },
      { path: join(xdg, 'unionctl', 'storage.conf'), loaded: true, unreachable: null },
    ]);

    const home = join(scratch.dir, 'home');
    mkdirSync(join(home, '.config', 'unionctl'), { recursive: true });
    writeFileSync(join(home, '.config', 'unionctl', 'storage.conf'), `[storage]\nroot = "${store('from-user')}"\n`);
    const viaHome = info([], { XDG_CONFIG_HOME: undefined, HOME: home });
    assert.equal(viaHome.config.settings.root.source, join(home, '.config', 'unionctl', 'storage.conf'));
  });

  it('storage options from a file reach the driver they are for, and are left alone by another; --storage-opt replaces them', () => {
    const UNIONCTL_CONFIG = configFile('[storage.options.overlay2]\nsize = "10G"\n');
    // overlay2 gets overlay2.size, which it cannot give on tmpfs: its refusal shows the option arrived.
    const overlay = run(['--root', store('opts-overlay2'), '--driver', 'overlay2', 'create'], { UNIONCTL_CONFIG });
    assert.equal(overlay.status, 1, showResult(overlay));
    assert.match(overlay.stderr, /overlay2\.size needs xfs with the pquota mount option/);

    const vfs = info(['--root', store('from-flag'), '--driver', 'vfs'], { UNIONCTL_CONFIG });
    assert.deepEqual(vfs.config.settings.storageOpt, { value: ['overlay2.size=10G'], source: UNIONCTL_CONFIG });

    const flag = ['--root', store('opts-flag'), '--driver', 'overlay2', '--storage-opt', 'overlay2.override_kernel_check=true'];
    ok(run([...flag, 'create'], { UNIONCTL_CONFIG }));
    const replaced = info(flag, { UNIONCTL_CONFIG });
    assert.deepEqual(replaced.config.settings.storageOpt, { value: ['overlay2.override_kernel_check=true'], source: 'flag --storage-opt' });
  });

  it('bad files are refused naming the file and the key, before anything is made', () => {
    const newRoot = store('never-made');
    const refused = (text: string, message: RegExp) => {
      const UNIONCTL_CONFIG = configFile(`[storage]\nroot = "${newRoot}"\n${text}`);
      const r = run(['create'], { UNIONCTL_CONFIG });
      assert.equal(r.status, 1, showResult(r));
      assert.match(r.stderr, new RegExp(`^unionctl: bad config file ${UNIONCTL_CONFIG}: ${message.source}`), showResult(r));
      assert.match(r.stderr, /^ {2}hint: /m);
      assert.equal(existsSync(newRoot), false, 'nothing is created');
    };
    refused('driver = \n', /line 3, column 10: /);
    refused('driver = 3\n', /storage\.driver is an integer \(3\); it must be a string/);
    refused('drive = "vfs"\n', /unknown key storage\.drive/);
    refused('driver = "zfs"\n', /storage\.driver "zfs" is not a storage driver/);
    refused('[storage.options]\nvfs.size = "1G"\n', /unknown storage option storage\.options\.vfs\.size/);
    refused(
      '[[registry]]\nlocation = "127.0.0.1:5000"\ninsecure = "yes"\n',
      /registry\[0\]\.insecure is a string \("yes"\); it must be a boolean/,
    );

    const missing = run(['info'], { UNIONCTL_CONFIG: join(scratch.dir, 'no-such.conf') });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /cannot read config file .*no-such\.conf: ENOENT/);
    const directory = run(['info'], { UNIONCTL_CONFIG: scratch.dir });
    assert.match(directory.stderr, /cannot read config file .*: EISDIR/);
  });

  it('a root from a file that holds no store: read-only commands refuse it, as they refuse --root', () => {
    const UNIONCTL_CONFIG = configFile(`[storage]\nroot = "${store('empty')}"\n`);
    const r = run(['info'], { UNIONCTL_CONFIG });
    assert.equal(r.status, 1, showResult(r));
    assert.match(r.stderr, /no store at /);
    assert.equal(existsSync(store('empty')), false);
  });

  describe('registries', { skip: registryAvailable() ? undefined : 'docker-registry or skopeo is not installed' }, () => {
    let registry: Registry;
    before(async () => {
      registry = await startRegistry({ dir: scratch.dir });
      registry.push(`docker-archive:${SAMPLE_DOCKER}`, 'sample/docker:1');
    });
    after(async () => {
      await registry?.stop();
    });

    it('a registry the file lists with insecure = true is pulled from over plain HTTP without --insecure', () => {
      const ref = `${registry.address}/sample/docker:1`;
      const g = ['--root', store('pulled'), '--driver', 'vfs'];
      const tls = run([...g, 'pull', ref], { UNIONCTL_CONFIG: configFile('') });
      assert.equal(tls.status, 1, showResult(tls));
      assert.match(tls.stderr, /needs --insecure \(or insecure = true for it in storage\.conf\)/);

      const UNIONCTL_CONFIG = configFile(`[[registry]]\nlocation = "${registry.address}"\ninsecure = true\n`);
      const pulled = JSON.parse(ok(run([...g, '--json', 'pull', ref], { UNIONCTL_CONFIG }))) as { image: { names: string[] } };
      assert.deepEqual(pulled.image.names, [ref]);
      assert.deepEqual(info(g, { UNIONCTL_CONFIG }).config.registries, [
        { location: registry.address, insecure: true, source: UNIONCTL_CONFIG },
      ]);
    });
  });
});
