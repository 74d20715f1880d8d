// The guest kernel: Debian's linux-image-amd64, resolved to its versioned package
// (linux-image-<ver>-amd64), fetched with `apt-get download` and unpacked privately into the cache
// dir (never into /boot, never installed). Device-mapper, dm-thin-pool, loop, ext4, xfs, 9p and
// virtio are all modules in that kernel, so initramfs.mjs picks them out of the unpacked tree.
//
// The bzImage's payload is also unpacked to an uncompressed vmlinux: qemu boots an ELF vmlinux
// through its PVH entry point, which skips the real-mode setup and the decompressor (~5 s under TCG).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Where kernels and initramfs images are kept; UNIONCTL_VM_CACHE overrides. */
export function cacheDir() {
  return process.env.UNIONCTL_VM_CACHE ?? join(homedir(), '.cache', 'unionctl-vm');
}

function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

/** "linux-image-6.1.0-56-amd64": the package the linux-image-amd64 metapackage depends on. */
export function resolveKernelPackage() {
  let out;
  try {
    out = run('apt-cache', ['depends', 'linux-image-amd64']);
  } catch (e) {
    throw new Error(`vm: cannot resolve linux-image-amd64 with apt-cache (${e.stderr?.trim() || e.message}); run apt-get update first`);
  }
  const m = /Depends:\s+(linux-image-[0-9][^\s]*-amd64)\b/.exec(out);
  if (!m) throw new Error(`vm: apt-cache depends linux-image-amd64 names no versioned linux-image package:\n${out}`);
  return m[1];
}

/** The Linux magic of an xz stream; Debian's amd64 kernels are xz-compressed (CONFIG_KERNEL_XZ). */
const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/** Unpacks the ELF vmlinux from a bzImage by finding its xz payload (what extract-vmlinux does). */
function extractVmlinux(bzImage, out) {
  const image = readFileSync(bzImage);
  for (let at = image.indexOf(XZ_MAGIC); at >= 0; at = image.indexOf(XZ_MAGIC, at + 1)) {
    let elf;
    try {
      // --single-stream stops at the end of the payload and ignores what follows it.
      elf = execFileSync('xz', ['-dc', '--single-stream'], {
        input: image.subarray(at),
        maxBuffer: 512 << 20,
        stdio: ['pipe', 'pipe', 'ignore'],
      });
    } catch {
      continue;
    }
    if (elf.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) {
      writeFileSync(out, elf);
      return;
    }
  }
  throw new Error(`vm: found no xz-compressed ELF kernel inside ${bzImage}`);
}

/**
 * Makes sure the kernel is unpacked in the cache and returns
 * { version, dir, vmlinux, bzImage, modulesDir }. Downloads only when missing.
 */
export function ensureKernel({ log = () => {} } = {}) {
  const pkg = resolveKernelPackage();
  const version = pkg.replace(/^linux-image-/, '');
  const dir = join(cacheDir(), pkg);
  const done = join(dir, '.complete');
  const paths = {
    version,
    dir,
    vmlinux: join(dir, 'vmlinux'),
    bzImage: join(dir, 'root', 'boot', `vmlinuz-${version}`),
    modulesDir: join(dir, 'root', 'lib', 'modules', version),
  };
  if (existsSync(done)) return paths;

  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'download'), { recursive: true });
  log(`vm: fetching ${pkg} with apt-get download`);
  try {
    run('apt-get', ['download', pkg], { cwd: join(dir, 'download') });
  } catch (e) {
    throw new Error(`vm: apt-get download ${pkg} failed: ${e.stderr?.trim() || e.message}`);
  }
  const deb = readdirSync(join(dir, 'download')).find((n) => n.endsWith('.deb'));
  if (!deb) throw new Error(`vm: apt-get download ${pkg} left no .deb in ${join(dir, 'download')}`);
  run('dpkg-deb', ['-x', join(dir, 'download', deb), join(dir, 'root')]);
  rmSync(join(dir, 'download'), { recursive: true, force: true });
  const tmp = `${paths.vmlinux}.tmp`;
  extractVmlinux(paths.bzImage, tmp);
  renameSync(tmp, paths.vmlinux);
  writeFileSync(done, `${pkg}\n`);
  log(`vm: kernel ${version} unpacked in ${dir}`);
  return paths;
}

// `node scripts/vm/kernel.mjs`: fetch now (setup-system.sh calls this).
if (import.meta.url === `file://${process.argv[1]}`) {
  const k = ensureKernel({ log: (m) => console.error(m) });
  console.log(k.vmlinux);
}
