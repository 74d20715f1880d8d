/**
 * Shared by the image tests: running the CLI, "is the store unchanged" listings, and building
 * image archives (good and bad ones) from the sample image's layers.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { after, before } from 'node:test';
import { makeScratch, type Scratch } from '../helpers/scratch.js';

export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
export const REPO = process.env.UNIONCTL_REPO ?? process.cwd();
export const FIXTURES = join(REPO, 'fixtures');
export const SAMPLE_DOCKER = join(FIXTURES, 'sample-docker.tar');
export const SAMPLE_OCI_GZIP = join(FIXTURES, 'sample-oci-gzip.tar');
export const SAMPLE_OCI_ZSTD = join(FIXTURES, 'sample-oci-zstd.tar');
export const EXPECTED_TREE = readFileSync(join(FIXTURES, 'sample-expected.txt'), 'utf8');
export const TREELIST = join(REPO, 'test', 'treelist.py');

/** diff_ids of the sample's layers, bottom first (fixtures/SAMPLE-README.md). */
export const DIFF_IDS = [
  'sha256:9e721e9db1f84b04216fcb0f3fe271f3e9d48a5fe020252e82180d636f2a27b1',
  'sha256:7058b3d776058fe84d8142c37271aa8d2890654562594c4b4a8cfcbe179d08c0',
  'sha256:2d03330843ef3bb247481366ee85ad8628c69efc9af29ec53430071860189fea',
  'sha256:d52c36bcc68cf387ca56ba2a2736674cdac472ea3ef6ef70393743c36580deca',
];
/** Image id of sample-docker.tar (its config's sha256). */
export const DOCKER_IMAGE_ID = 'sha256:1cac91af1a9293a18ca5edea62f01cb6b7186865673a44854e6007d50d1096aa';
/** Image id of the OCI archives (skopeo rewrote the config). */
export const OCI_IMAGE_ID = 'sha256:457ebf047d7b7c6b6e25044a447053f2b36de4f21d7f8da968f44d482e65eff9';

export interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function unionctl(args: string[], opts: { input?: Buffer } = {}): Result {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.FORCE_COLOR;
  delete env.COLUMNS; // tables are read whole: not cut to a width
  const r = spawnSync(process.execPath, [MAIN, ...args], { input: opts.input, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * unionctl as unionctl() runs it, without blocking this process: for tests whose servers (a token
 * server, a proxy) run in this process and must answer while the command runs.
 */
export async function unionctlAsync(args: string[], opts: { input?: Buffer } = {}): Promise<Result> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.FORCE_COLOR;
  delete env.COLUMNS; // tables are read whole: not cut to a width
  const child = spawn(process.execPath, [MAIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(opts.input);
  const status = await new Promise<number | null>((resolve, reject) => child.on('error', reject).on('close', (code) => resolve(code)));
  return { status, stdout, stderr };
}

export function show(r: Result): string {
  return `exit ${r.status}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

export function ok(r: Result): string {
  assert.equal(r.status, 0, show(r));
  return r.stdout;
}

/** One `unionctl:` line (plus at most a hint), no stack trace, exit 1, the line matching `mention`. */
export function assertCleanFailure(r: Result, mention: RegExp): void {
  assert.equal(r.status, 1, show(r));
  const lines = r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('(node:') && !l.includes('--trace-warnings'));
  assert.ok(lines.length >= 1 && lines.length <= 2, `one error line and at most one hint line expected:\n${show(r)}`);
  assert.match(lines[0], /^unionctl: \S/, show(r));
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  assert.match(lines[0], mention, show(r));
}

/** path, type and size of everything under `dir`: what "the store is unchanged" compares. */
export function listing(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return execFileSync('find', [dir, '-printf', '%P %y %s\\n'], { encoding: 'utf8' }).split('\n').filter(Boolean).sort();
}

export function treeList(dir: string): string {
  return execFileSync('python3', [TREELIST, dir], { encoding: 'utf8', maxBuffer: 64 << 20 });
}

/** The tree listing of image or layer `ref` mounted (read-only), unmounted again. */
export function flattenedTree(g: string[], ref: string): string {
  const lines = ok(unionctl([...g, 'mount', ref]))
    .trim()
    .split('\n');
  const layer = /^layer (\S+)$/.exec(lines[0]!)?.[1] ?? ref;
  try {
    return treeList(lines[lines.length - 1]!);
  } finally {
    ok(unionctl([...g, 'umount', layer]));
  }
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Unpacks an archive into a fresh directory. */
export function untar(archive: string, dir: string): string {
  mkdirSync(dir, { recursive: true });
  execFileSync('tar', ['-xf', archive, '-C', dir]);
  return dir;
}

/** Packs a directory's contents into an archive (member names without a ./ prefix). */
export function tarDir(dir: string, archive: string): string {
  const names = execFileSync('ls', ['-A', dir], { encoding: 'utf8' }).split('\n').filter(Boolean);
  execFileSync('tar', ['-cf', archive, '-C', dir, ...names]);
  return archive;
}

/** The sample's four uncompressed layer tars, bottom first, from sample-docker.tar. */
export function sampleLayers(scratch: string): Buffer[] {
  const dir = untar(SAMPLE_DOCKER, join(scratch, 'sample-layers'));
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
  return manifest[0].Layers.map((l) => readFileSync(join(dir, l)));
}

export interface OciLayerSpec {
  /** The uncompressed layer tar. */
  tar: Buffer;
  compression?: 'none' | 'gzip' | 'zstd';
  /** Override the media type written into the manifest. */
  mediaType?: string;
  /** Write these bytes as the blob instead of the (compressed) tar, under the digest of the real blob. */
  tamperedBlob?: (blob: Buffer) => Buffer;
  /** Leave the blob out of blobs/. */
  omitBlob?: boolean;
}

export interface OciImageSpec {
  layers: OciLayerSpec[];
  name?: string;
  /** Replace the config text (default: a minimal valid config with the layers' diff IDs). */
  configText?: string;
}

function compress(tar: Buffer, how: 'none' | 'gzip' | 'zstd'): Buffer {
  if (how === 'gzip') return gzipSync(tar);
  if (how === 'zstd') return execFileSync('zstd', ['-q', '-c'], { input: tar, maxBuffer: 1 << 30 });
  return tar;
}

const LAYER_MEDIA = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

/** Writes an OCI image layout directory holding one image. Returns the dir. */
export function writeOciLayout(dir: string, spec: OciImageSpec): string {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  const putBlob = (data: Buffer, digest = sha256(data)) => {
    writeFileSync(join(dir, 'blobs', 'sha256', digest.slice(7)), data);
    return digest;
  };
  const layers = spec.layers.map((l) => {
    const how = l.compression ?? 'none';
    const blob = compress(l.tar, how);
    const digest = sha256(blob);
    if (!l.omitBlob) putBlob(l.tamperedBlob ? l.tamperedBlob(blob) : blob, digest);
    return { mediaType: l.mediaType ?? LAYER_MEDIA[how], digest, size: blob.length };
  });
  const configText =
    spec.configText ??
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: spec.layers.map((l) => sha256(l.tar)) },
    });
  const config = Buffer.from(configText);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: putBlob(config), size: config.length },
      layers,
    }),
  );
  const annotations = spec.name ? { 'org.opencontainers.image.ref.name': spec.name } : undefined;
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: putBlob(manifest), size: manifest.length, annotations },
      ],
    }),
  );
  return dir;
}

/** A layer tar from a tree of generated files (GNU tar, like a real layer). */
export function makeLayerTar(scratch: string, name: string, files: Record<string, Buffer | string>): Buffer {
  const src = join(scratch, `src-${name}`);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(src, path, '..'), { recursive: true });
    writeFileSync(join(src, path), content);
  }
  return execFileSync('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '-cf', '-', '-C', src, '.'], { maxBuffer: 1 << 30 });
}

/** A test file's scratch tmpfs and the store roots made in it (scratchStores). */
export interface ScratchStores {
  /** The scratch dir (set once the file's first `before` has run). */
  readonly dir: string;
  /** Global options for a new store root in the scratch dir: `--root <dir>/root-<driver>-<n> --driver <driver>`. */
  freshRoot(driver: string): string[];
}

/**
 * Registers a scratch tmpfs for the calling test file: made before its tests, and after them every
 * store root freshRoot made is released (`umount --all`, then `cleanup`) before the tmpfs goes.
 */
export function scratchStores(): ScratchStores {
  let scratch: Scratch | undefined;
  let roots = 0;
  const stores: ScratchStores = {
    get dir() {
      return scratch?.dir ?? '';
    },
    freshRoot: (driver) => ['--root', join(stores.dir, `root-${driver}-${++roots}`), '--driver', driver],
  };
  before(() => {
    scratch = makeScratch();
  });
  after(() => {
    const dir = stores.dir;
    for (const name of existsSync(dir) ? readdirSync(dir) : []) {
      if (!name.startsWith('root-')) continue;
      unionctl(['--root', join(dir, name), 'umount', '--all']);
      unionctl(['--root', join(dir, name), 'cleanup']);
    }
    scratch?.dispose();
  });
  return stores;
}
