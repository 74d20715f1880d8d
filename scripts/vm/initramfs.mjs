// The guest's initramfs: busybox (from busybox-static), init.sh as /init, and the kernel modules
// the tests need with everything they depend on, in load order (/modules.order; init.sh insmods
// them one by one — there is no depmod output in the unpacked package, so the order comes from
// each module's own `depends=` modinfo field).
//
// The image is a gzip'd newc cpio written here (no cpio(1) needed), cached by a hash of its inputs.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';

/**
 * Modules asked for by name; their dependencies are added. crc32c_generic: ext4/xfs/thin metadata
 * checksums (and libcrc32c at load time) look the crc32c algorithm up through the crypto API,
 * which would otherwise call modprobe (absent in the guest): it is loaded first.
 */
export const WANTED_MODULES = [
  'crc32c_generic',
  'virtio_pci',
  '9pnet_virtio',
  '9p',
  'loop',
  'dm-mod',
  'dm-thin-pool',
  'ext4',
  'xfs',
  'overlay',
];

const BUSYBOX = '/bin/busybox';
const INIT = new URL('./init.sh', import.meta.url).pathname;

/** name (dashes and underscores are the same to the kernel) → path of its .ko */
function indexModules(modulesDir) {
  const index = new Map();
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ko')) index.set(e.name.slice(0, -3).replace(/-/g, '_'), p);
    }
  };
  walk(join(modulesDir, 'kernel'));
  return index;
}

/** The `depends=a,b` entry of a module's .modinfo section. */
function dependsOf(koPath) {
  const bytes = readFileSync(koPath);
  const at = bytes.indexOf('\0depends=');
  if (at < 0) return [];
  const end = bytes.indexOf(0, at + 1);
  const list = bytes.subarray(at + '\0depends='.length, end).toString('latin1');
  return list === '' ? [] : list.split(',').map((n) => n.replace(/-/g, '_'));
}

/** Wanted modules plus their dependencies, each after everything it depends on. */
export function moduleLoadOrder(modulesDir, wanted = WANTED_MODULES) {
  const index = indexModules(modulesDir);
  const order = [];
  const seen = new Set();
  const visit = (name) => {
    const key = name.replace(/-/g, '_');
    if (seen.has(key)) return;
    seen.add(key);
    const path = index.get(key);
    if (path === undefined)
      throw new Error(
        `vm: module ${name} is not in ${modulesDir} (built into the kernel would be fine, but then remove it from WANTED_MODULES)`,
      );
    for (const dep of dependsOf(path)) visit(dep);
    order.push({ name: key, path });
  };
  for (const name of wanted) visit(name);
  return order;
}

// ---- newc cpio -------------------------------------------------------------------------------

function hex8(n) {
  return n.toString(16).padStart(8, '0');
}

function pad4(length) {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

/** One newc record. mode includes the file type bits. */
function cpioEntry(ino, name, mode, data = Buffer.alloc(0)) {
  const nameBytes = Buffer.from(`${name}\0`);
  const fields = [ino, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0];
  const header = Buffer.from(`070701${fields.map(hex8).join('')}`, 'latin1');
  const head = Buffer.concat([header, nameBytes]);
  return Buffer.concat([head, pad4(head.length), data, pad4(data.length)]);
}

function buildCpio(files) {
  const parts = files.map((f, i) => cpioEntry(i + 1, f.name, f.mode, f.data));
  parts.push(cpioEntry(0, 'TRAILER!!!', 0));
  return Buffer.concat(parts);
}

const DIR = 0o040755;
const EXE = 0o100755;
const FILE = 0o100644;

/** Builds (or reuses) the initramfs for the given kernel; returns its path. */
export function ensureInitramfs(kernel) {
  const modules = moduleLoadOrder(kernel.modulesDir);
  const busybox = readFileSync(BUSYBOX);
  const init = readFileSync(INIT);
  const hash = createHash('sha256');
  hash.update(busybox).update(init);
  for (const m of modules) hash.update(m.name).update(String(statSync(m.path).size));
  const out = join(kernel.dir, `initramfs-${hash.digest('hex').slice(0, 16)}.cpio.gz`);
  if (existsSync(out)) return out;

  const files = [
    ...['bin', 'dev', 'proc', 'sys', 'newroot', 'modules'].map((name) => ({ name, mode: DIR })),
    { name: 'bin/busybox', mode: EXE, data: busybox },
    { name: 'init', mode: EXE, data: init },
    { name: 'modules.order', mode: FILE, data: Buffer.from(modules.map((m) => `${m.name}.ko`).join('\n') + '\n') },
    ...modules.map((m) => ({ name: `modules/${m.name}.ko`, mode: FILE, data: readFileSync(m.path) })),
  ];
  const tmp = join(dirname(out), `.initramfs.${process.pid}.tmp`);
  writeFileSync(tmp, gzipSync(buildCpio(files), { level: 1 }));
  renameSync(tmp, out);
  return out;
}
