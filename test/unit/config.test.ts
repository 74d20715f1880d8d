/**
 * storage.conf parsing and merging (src/cli/config.ts) and how the files sit under the environment
 * and the flags (src/cli/settings.ts), with injected paths and environments: no test reads
 * /etc/unionctl or the real home.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Command, Option } from 'commander';
import { storageOptsFor } from '../../src/index.js'; // importing it registers the drivers whose names and options a file may use
import { configPaths, mergeConfigs, parseConfig, readConfigFile, SYSTEM_CONFIG, userConfigPath } from '../../src/cli/config.js';
import { applyConfig, configOf, insecureRegistries, settingSource, storageOptFromConfig } from '../../src/cli/settings.js';
import { UnionctlError } from '../../src/errors.js';

const FILE = '/test/storage.conf';

/** Asserts that parsing `text` fails with USAGE and a message matching `message`. */
function refuses(text: string, message: RegExp): void {
  assert.throws(
    () => parseConfig(text, FILE),
    (e: unknown) =>
      e instanceof UnionctlError && e.code === 'USAGE' && message.test(e.message) && e.message.startsWith(`bad config file ${FILE}: `),
  );
}

describe('parseConfig', () => {
  it('reads [storage] (root or graphroot), [storage.options] as Docker option names, and [[registry]]', () => {
    const parsed = parseConfig(
      [
        '[storage]',
        'driver = "overlay2"',
        'graphroot = "/srv/unionctl"',
        '[storage.options]',
        'dm.basesize = 20',
        '[storage.options.overlay2]',
        'size = "10G"',
        'override_kernel_check = true',
        '[[registry]]',
        'location = "127.0.0.1:5000"',
        'insecure = true',
        '[[registry]]',
        'location = "registry.example.com"',
      ].join('\n'),
      FILE,
    );
    assert.deepEqual(parsed, {
      root: '/srv/unionctl',
      driver: 'overlay2',
      storageOpt: ['dm.basesize=20', 'overlay2.size=10G', 'overlay2.override_kernel_check=true'],
      registries: [
        { location: '127.0.0.1:5000', insecure: true },
        { location: 'registry.example.com', insecure: false },
      ],
    });
    assert.deepEqual(parseConfig('', FILE), { root: undefined, driver: undefined, storageOpt: undefined, registries: [] });
  });

  it('refuses bad TOML with the line and column', () => {
    refuses('[storage]\nroot = \n', /^bad config file \S+: line 2, column 8: invalid value$/);
    refuses('[storage\n', /line 1, column \d+: /);
  });

  it('refuses unknown keys, naming them', () => {
    refuses('[storag]\n', /unknown key storag$/);
    refuses('[storage]\nrunroot = "/run/x"\n', /unknown key storage\.runroot$/);
    refuses('[[registry]]\nlocation = "a.b"\nmirror = "c.d"\n', /unknown key registry\[0\]\.mirror$/);
    refuses('[storage.options]\noverlay2.sise = "1G"\n', /unknown storage option storage\.options\.overlay2\.sise$/);
  });

  it('refuses values of the wrong type, naming the key and the type it must be', () => {
    refuses('[storage]\ndriver = 3\n', /storage\.driver is an integer \(3\); it must be a string$/);
    refuses('[storage]\nroot = ["/a"]\n', /storage\.root is an array; it must be a string$/);
    refuses('storage = 1\n', /storage is an integer \(1\); it must be a table \(\[storage\]\)$/);
    refuses('[storage]\noptions = ["overlay2.size=1G"]\n', /storage\.options is an array; it must be a table/);
    refuses(
      '[storage.options]\noverlay2.size = [1]\n',
      /storage\.options\.overlay2\.size is an array; it must be a string, a number or a boolean$/,
    );
    refuses('[registry]\nlocation = "a.b"\n', /registry is a table; it must be an array of tables/);
    refuses('[[registry]]\nlocation = "a.b"\ninsecure = 1\n', /registry\[0\]\.insecure is an integer \(1\); it must be a boolean$/);
  });

  it('refuses values that cannot be right', () => {
    refuses('[storage]\nroot = "relative/dir"\n', /storage\.root "relative\/dir" is not an absolute path$/);
    refuses('[storage]\nroot = ""\n', /storage\.root is empty$/);
    refuses('[storage]\nroot = "/a"\ngraphroot = "/b"\n', /storage\.root and storage\.graphroot are the same setting/);
    refuses('[storage]\ndriver = "btrfs"\n', /storage\.driver "btrfs" is not a storage driver$/);
    refuses('[[registry]]\ninsecure = true\n', /registry\[0\]\.location is missing$/);
    refuses('[[registry]]\nlocation = "myregistry"\n', /registry\[0\]\.location "myregistry" is not a registry host\[:port\]$/);
  });
});

describe('storageOptsFor', () => {
  it("keeps the items of one driver's keys (case-insensitive), drops the rest", () => {
    const items = ['OVERLAY2.SIZE=1G', 'dm.basesize=2G', 'overlay2.override_kernel_check=true', 'junk'];
    assert.deepEqual(storageOptsFor(['overlay2.size', 'overlay2.override_kernel_check'], items), [
      'OVERLAY2.SIZE=1G',
      'overlay2.override_kernel_check=true',
    ]);
    assert.deepEqual(storageOptsFor([], items), []);
  });
});

describe('the configuration files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'unionctl-config-unit-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('are /etc/unionctl/storage.conf then the user file; UNIONCTL_CONFIG names one instead', () => {
    assert.equal(userConfigPath({ XDG_CONFIG_HOME: '/x', HOME: '/h' }), '/x/unionctl/storage.conf');
    assert.equal(userConfigPath({ HOME: '/h' }), '/h/.config/unionctl/storage.conf');
    assert.deepEqual(configPaths({ HOME: '/h' }), { paths: [SYSTEM_CONFIG, '/h/.config/unionctl/storage.conf'], required: false });
    assert.deepEqual(configPaths({ HOME: '/h', UNIONCTL_CONFIG: '/one.conf' }), { paths: ['/one.conf'], required: true });
  });

  it('a missing file is no configuration, unless it was named; a path that cannot be looked at counts as missing; an unreadable file is an error', () => {
    assert.deepEqual(readConfigFile(join(dir, 'absent.conf')), {});
    assert.deepEqual(readConfigFile(join(dir, 'x', 'absent.conf')), {});
    assert.throws(() => readConfigFile(join(dir, 'absent.conf'), true), /cannot read config file .*absent\.conf: ENOENT/);
    assert.throws(() => readConfigFile(dir), /cannot read config file .*: EISDIR/);
    // A path that cannot be looked at (EACCES on another user's home; ENOTDIR here, as root may enter any dir).
    const plain = join(dir, 'plain-file');
    writeFileSync(plain, '');
    assert.deepEqual(readConfigFile(join(plain, 'storage.conf')), { unreachable: 'ENOTDIR' });
    assert.throws(() => readConfigFile(join(plain, 'storage.conf'), true), /cannot read config file .*: ENOTDIR/);
  });

  it('merge: a later file overrides an earlier one key by key; registries by location', () => {
    const system = parseConfig(
      '[storage]\nroot = "/sys-root"\ndriver = "vfs"\n[storage.options]\noverlay2.size = "1G"\n[[registry]]\nlocation = "a.example"\ninsecure = true\n[[registry]]\nlocation = "b.example"\n',
      '/etc/s.conf',
    );
    const user = parseConfig('[storage]\nroot = "/user-root"\n[[registry]]\nlocation = "a.example"\n', '/home/u.conf');
    const merged = mergeConfigs([
      { path: '/etc/s.conf', config: system },
      { path: '/home/u.conf', config: user },
      { path: '/absent.conf' },
      { path: '/home/other/.config/unionctl/storage.conf', unreachable: 'EACCES' },
    ]);
    assert.deepEqual(merged.files, [
      { path: '/etc/s.conf', loaded: true },
      { path: '/home/u.conf', loaded: true },
      { path: '/absent.conf', loaded: false },
      { path: '/home/other/.config/unionctl/storage.conf', loaded: false, unreachable: 'EACCES' },
    ]);
    assert.deepEqual(merged.root, { value: '/user-root', source: '/home/u.conf' });
    assert.deepEqual(merged.driver, { value: 'vfs', source: '/etc/s.conf' });
    assert.deepEqual(merged.storageOpt, { value: ['overlay2.size=1G'], source: '/etc/s.conf' });
    assert.deepEqual(merged.registries, [
      { location: 'b.example', insecure: false, source: '/etc/s.conf' },
      { location: 'a.example', insecure: false, source: '/home/u.conf' },
    ]);
  });

  describe('under the environment and the flags (applyConfig)', () => {
    const file = join(dir, 'storage.conf');
    writeFileSync(
      file,
      '[storage]\nroot = "/conf-root"\ndriver = "vfs"\n[storage.options]\noverlay2.size = "2G"\n[[registry]]\nlocation = "r.example:5000"\ninsecure = true\n',
    );

    /** A program with the CLI's three global options, parsed from `argv` with `env`, then given the file. */
    function program(argv: string[], env: Record<string, string | undefined>): Command {
      const saved = Object.fromEntries(Object.keys(env).map((key) => [key, process.env[key]]));
      Object.assign(process.env, env); // commander reads option env vars from process.env
      try {
        const p = new Command('unionctl')
          .addOption(new Option('--root <dir>').env('UNIONCTL_ROOT').default('/var/lib/unionctl'))
          .addOption(new Option('--driver <name>').env('UNIONCTL_DRIVER'))
          .addOption(new Option('--storage-opt <kv>').argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]))
          .exitOverride();
        p.parse(argv, { from: 'user' });
        applyConfig(p, { UNIONCTL_CONFIG: file, ...env });
        return p;
      } finally {
        for (const [key, value] of Object.entries(saved)) {
          if (value === undefined) delete process.env[key];
          else process.env[key] = value;
        }
      }
    }

    it('the file fills in what nothing else set', () => {
      const p = program([], {});
      assert.deepEqual(p.opts(), { root: '/conf-root', driver: 'vfs', storageOpt: ['overlay2.size=2G'] });
      assert.equal(settingSource(p, 'root'), file);
      assert.equal(settingSource(p, 'driver'), file);
      assert.equal(storageOptFromConfig(p), true);
      assert.deepEqual(insecureRegistries(p), ['r.example:5000']);
      assert.deepEqual(configOf(p).files, [{ path: file, loaded: true }]);
    });

    it('the environment beats the file, flags beat both', () => {
      const env = program([], { UNIONCTL_ROOT: '/env-root', UNIONCTL_DRIVER: 'overlay2' });
      assert.deepEqual([env.opts().root, settingSource(env, 'root')], ['/env-root', 'env UNIONCTL_ROOT']);
      assert.deepEqual([env.opts().driver, settingSource(env, 'driver')], ['overlay2', 'env UNIONCTL_DRIVER']);
      const flags = program(['--root', '/flag-root', '--driver', 'vfs', '--storage-opt', 'dm.basesize=1G'], { UNIONCTL_ROOT: '/env-root' });
      assert.deepEqual([flags.opts().root, settingSource(flags, 'root')], ['/flag-root', 'flag --root']);
      assert.equal(settingSource(flags, 'driver'), 'flag --driver');
      assert.deepEqual(flags.opts().storageOpt, ['dm.basesize=1G'], "--storage-opt replaces the file's options");
      assert.equal(storageOptFromConfig(flags), false);
    });

    it(
      'with no file, the defaults say so',
      { skip: existsSync(SYSTEM_CONFIG) ? `${SYSTEM_CONFIG} exists on this machine` : undefined },
      () => {
        const p = new Command('unionctl')
          .addOption(new Option('--root <dir>').default('/var/lib/unionctl'))
          .addOption(new Option('--driver <name>'));
        p.parse([], { from: 'user' });
        applyConfig(p, { XDG_CONFIG_HOME: join(dir, 'none'), HOME: join(dir, 'none') });
        assert.equal(settingSource(p, 'root'), 'default');
        assert.equal(settingSource(p, 'driver'), 'default');
        assert.equal(p.opts().root, '/var/lib/unionctl');
      },
    );
  });
});
