/**
 * What the plugin must remember across its own restarts, in `<root>/plugins/docker/<name>.json`
 * (replaced atomically and durably on every change, src/sys/atomic-file.ts):
 *
 * - `init`: dockerd's Init request ({Home, Opts, UIDMaps, GIDMaps}). dockerd sends Init once, when
 *   it starts, and never again to a plugin that restarted: a restarted plugin serves on from this.
 * - `mounts`: how many Get references this plugin holds on each layer (they are the store's
 *   persistent mount references, so they outlive the process). Cleanup releases exactly these —
 *   never the mounts other users of the store made — and so does an Init from a new dockerd
 *   (which starts counting from zero).
 *
 * The file is written only by the plugin process that serves `name` (the socket is the lock) and
 * every write is synchronous, so two requests never interleave a read-modify-write.
 * A kill between a mount and its count leaves one mount uncounted (it stays, never a mount of
 * someone else released): `unionctl umount` or `cleanup` releases it.
 */
import { join } from 'node:path';
import { assertValidId, corruptError } from '../../errors.js';
import { ensureStoreDir, parseStoreJsonObject, readStoreFile, writeFileAtomic } from '../../sys/index.js';

/** dockerd's GraphDriver.Init arguments (daemon/graphdriver/proxy.go: graphDriverInitRequest). */
export interface InitRequest {
  Home: string;
  Opts: string[];
  UIDMaps: unknown[];
  GIDMaps: unknown[];
}

interface StateFile {
  init?: InitRequest;
  mounts: Record<string, number>;
}

const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

/** A JSON value as an InitRequest, or why not (null and missing lists are empty lists, as Go sends them). */
export function parseInitRequest(v: Record<string, unknown>): InitRequest | string {
  const list = (k: string) => (v[k] === undefined || v[k] === null ? [] : v[k]);
  const opts = list('Opts');
  const uid = list('UIDMaps');
  const gid = list('GIDMaps');
  if (typeof v.Home !== 'string' || v.Home === '') return '"Home" is not a directory name';
  if (!isStringArray(opts)) return '"Opts" is not a list of strings';
  if (!Array.isArray(uid) || !Array.isArray(gid)) return '"UIDMaps" and "GIDMaps" must be lists';
  return { Home: v.Home, Opts: opts, UIDMaps: uid, GIDMaps: gid };
}

export class PluginState {
  private state: StateFile;

  private constructor(
    readonly file: string,
    state: StateFile,
  ) {
    this.state = state;
  }

  /** Reads (or starts) the state of plugin `name` in the store at `root`. CORRUPT for a damaged file. */
  static open(root: string, name: string): PluginState {
    assertValidId(name, 'plugin name');
    ensureStoreDir(join(root, 'plugins'), 0o700, 'plugin state directory');
    ensureStoreDir(join(root, 'plugins', 'docker'), 0o700, 'plugin state directory');
    const file = join(root, 'plugins', 'docker', `${name}.json`);
    const text = readStoreFile(file, 'docker plugin state file');
    return new PluginState(file, text === undefined ? { mounts: {} } : parseState(text, file));
  }

  get init(): InitRequest | undefined {
    return this.state.init;
  }

  setInit(init: InitRequest): void {
    this.write({ ...this.state, init });
  }

  /** The layers this plugin holds Get references on, with their counts. */
  heldMounts(): Array<[string, number]> {
    return Object.entries(this.state.mounts).filter(([, n]) => n > 0);
  }

  count(id: string): number {
    return this.state.mounts[id] ?? 0;
  }

  /** Adds `delta` to the references held on `id` (never below zero). */
  addMount(id: string, delta: number): void {
    const mounts = { ...this.state.mounts };
    const n = Math.max(0, (mounts[id] ?? 0) + delta);
    if (n === 0) delete mounts[id];
    else mounts[id] = n;
    this.write({ ...this.state, mounts });
  }

  private write(next: StateFile): void {
    writeFileAtomic(this.file, `${JSON.stringify(next, null, 2)}\n`, { durable: true });
    this.state = next;
  }
}

function parseState(text: string, file: string): StateFile {
  const corrupt = (why: string) =>
    corruptError(`docker plugin state file ${file} ${why}`, {
      repair: 'remove it and restart dockerd (which sends Init again); the mounts it counted are released by unionctl cleanup',
    });
  const { init, mounts } = parseStoreJsonObject(text, corrupt);
  let parsedInit: InitRequest | undefined;
  if (init !== undefined) {
    const p = typeof init === 'object' && init !== null ? parseInitRequest(init as Record<string, unknown>) : 'is not an object';
    if (typeof p === 'string') throw corrupt(`has an "init" whose ${p}`);
    parsedInit = p;
  }
  if (typeof mounts !== 'object' || mounts === null || Array.isArray(mounts)) throw corrupt('has no "mounts" object');
  for (const [id, n] of Object.entries(mounts)) {
    if (!Number.isSafeInteger(n) || (n as number) < 0) throw corrupt(`counts ${JSON.stringify(n)} mounts of layer ${id}`);
  }
  return { ...(parsedInit === undefined ? {} : { init: parsedInit }), mounts: mounts as Record<string, number> };
}
