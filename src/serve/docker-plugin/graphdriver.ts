/**
 * The GraphDriver methods of Docker's legacy plugin protocol (moby v20.10
 * daemon/graphdriver/proxy.go names them and their arguments), each mapped onto one LayerStore
 * call, so dockerd's layers are ordinary unionctl layer records:
 *
 *   Init            persisted (state.ts); refused when it conflicts with the store or an earlier Init
 *   Create          store.create({id, parent})
 *   CreateReadWrite store.create({id, parent, writable: true, storageOpt})
 *   Remove          store.remove (a layer that is not there: done, as Docker's drivers do)
 *   Get / Put       store.mount / store.unmount: persistent references, counted in state.ts
 *   Exists, Status (store.info), GetMetadata (driver.metadata), Capabilities
 *   Changes         store.changes, Kind 0 modify / 1 add / 2 delete
 *   DiffSize        store.diffSize
 *   Diff            store.diff, the tar as the response body
 *   ApplyDiff       ?id=&parent=, the uncompressed tar as the request body: store.applyDiff
 *   Cleanup         releases the references this plugin holds, nothing else
 */
import type { Readable } from 'node:stream';
import { UnionctlError } from '../../errors.js';
import type { ChangeKind } from '../../graph/driver.js';
import { splitStorageOpts } from '../../graph/registry.js';
import type { LayerStore } from '../../graph/store.js';
import type { Logger } from '../log.js';
import type { PluginHandler, PluginRequest, PluginResponse } from './server.js';
import { parseInitRequest, type InitRequest, type PluginState } from './state.js';

/** Docker's archive.ChangeType: 0 modify, 1 add, 2 delete. */
const CHANGE_KIND: Record<ChangeKind, number> = { C: 0, A: 1, D: 2 };

/** An Opts key that names the unionctl driver dockerd expects (`--storage-opt unionctl.driver=overlay2`). */
const DRIVER_OPT = 'unionctl.driver';

export interface GraphDriverPluginOptions {
  store: LayerStore;
  state: PluginState;
  /** The plugin's own driver-wide storage options (`--storage-opt`), which dockerd's Opts must agree with. */
  storageOpt: Readonly<Record<string, string>>;
  log: Logger;
}

const json = (value: unknown): PluginResponse => ({ json: value });

function stringArg(body: Record<string, unknown>, key: string, what: string, required = true): string | undefined {
  const v = body[key];
  if ((v === undefined || v === null || v === '') && !required) return undefined;
  if (typeof v !== 'string' || v === '') throw new UnionctlError('USAGE', `${what}: "${key}" must be a non-empty string`);
  return v;
}

/** {ID, Parent?} of a request. */
async function idArgs(req: PluginRequest): Promise<{ id: string; parent: string | undefined; body: Record<string, unknown> }> {
  const body = await req.json();
  return { id: stringArg(body, 'ID', req.method)!, parent: stringArg(body, 'Parent', req.method, false), body };
}

function storageOptArg(body: Record<string, unknown>, what: string): Record<string, string> {
  const v = body.StorageOpt;
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v) || !Object.values(v).every((x) => typeof x === 'string')) {
    throw new UnionctlError('USAGE', `${what}: "StorageOpt" must be a map of strings`);
  }
  return v as Record<string, string>;
}

/** An unmount that failed because there was nothing to release: not mounted (a `unionctl cleanup` ran), or no such layer. */
function releasedAnyway(e: unknown): boolean {
  const code = (e as UnionctlError).code;
  return code === 'USAGE' || code === 'NOT_FOUND';
}

export class GraphDriverPlugin {
  private readonly store: LayerStore;
  private readonly state: PluginState;
  private readonly storageOpt: Readonly<Record<string, string>>;
  private readonly log: Logger;

  constructor(opts: GraphDriverPluginOptions) {
    this.store = opts.store;
    this.state = opts.state;
    this.storageOpt = opts.storageOpt;
    this.log = opts.log;
  }

  /** Method name → handler, for the protocol server. */
  handlers(): Map<string, PluginHandler> {
    const gd =
      (fn: (req: PluginRequest) => Promise<PluginResponse>): PluginHandler =>
      async (req) => {
        this.assertInitialised();
        return fn(req);
      };
    return new Map<string, PluginHandler>([
      ['Plugin.Activate', async () => json({ Implements: ['GraphDriver'] })],
      ['GraphDriver.Init', (req) => this.init(req)],
      ['GraphDriver.Capabilities', gd(async () => json({ Capabilities: { ReproducesExactDiffs: false } }))],
      ['GraphDriver.Status', gd(() => this.status())],
      ['GraphDriver.Create', gd((req) => this.create(req, false))],
      ['GraphDriver.CreateReadWrite', gd((req) => this.create(req, true))],
      ['GraphDriver.Remove', gd((req) => this.remove(req))],
      ['GraphDriver.Get', gd((req) => this.get(req))],
      ['GraphDriver.Put', gd((req) => this.put(req))],
      ['GraphDriver.Exists', gd((req) => this.exists(req))],
      ['GraphDriver.GetMetadata', gd((req) => this.metadata(req))],
      ['GraphDriver.Cleanup', gd(() => this.cleanup())],
      ['GraphDriver.Changes', gd((req) => this.changes(req))],
      ['GraphDriver.DiffSize', gd((req) => this.diffSize(req))],
      ['GraphDriver.Diff', gd((req) => this.diff(req))],
      ['GraphDriver.ApplyDiff', gd((req) => this.applyDiff(req))],
    ]);
  }

  private assertInitialised(): void {
    if (this.state.init !== undefined) return;
    throw new UnionctlError('USAGE', 'the unionctl plugin has not been initialised: dockerd has sent no Init yet', {
      hint: 'restart dockerd with --storage-driver set to this plugin',
    });
  }

  // ---- Init ------------------------------------------------------------------------------------

  /** Why `init` cannot be served by this plugin's store, or undefined. */
  private conflict(init: InitRequest): UnionctlError | undefined {
    const driver = this.store.driver.name;
    for (const [key, value] of Object.entries(splitStorageOpts(init.Opts, "dockerd's Init"))) {
      const item = `${key}=${value}`;
      if (key === DRIVER_OPT) {
        if (value !== driver) {
          return new UnionctlError('BAD_OPTION', `dockerd asks for unionctl driver ${value}, but this plugin's store uses ${driver}`, {
            hint: `start the plugin with --driver ${value} and another --root, or drop --storage-opt ${DRIVER_OPT} from dockerd`,
          });
        }
      } else if (this.storageOpt[key] !== value) {
        const mine = this.storageOpt[key];
        return new UnionctlError(
          'BAD_OPTION',
          `dockerd's storage option ${item} differs from the plugin's (${mine === undefined ? 'not set' : `${key}=${mine}`})`,
          { hint: `start the plugin with --storage-opt ${item}, or drop it from dockerd` },
        );
      }
    }
    if (init.UIDMaps.length > 0 || init.GIDMaps.length > 0) {
      return new UnionctlError(
        'UNSUPPORTED',
        'dockerd runs with user namespace remapping (--userns-remap), which the unionctl plugin does not support',
        {
          hint: 'start dockerd without --userns-remap',
        },
      );
    }
    const earlier = this.state.init;
    if (earlier !== undefined && earlier.Home !== init.Home) {
      return new UnionctlError('IN_USE', `this plugin already serves the dockerd whose home is ${earlier.Home}, not ${init.Home}`, {
        hint: `give each dockerd its own plugin (name and --root), or remove ${this.state.file} once that dockerd is gone for good`,
      });
    }
    return undefined;
  }

  private async init(req: PluginRequest): Promise<PluginResponse> {
    const init = parseInitRequest(await req.json());
    if (typeof init === 'string') throw new UnionctlError('USAGE', `GraphDriver.Init: ${init}`);
    const conflict = this.conflict(init);
    if (conflict !== undefined) {
      this.log.error(`refused dockerd's Init: ${conflict.message}`);
      throw conflict;
    }
    // A new dockerd counts its mounts from zero: what the previous one held (it stopped without Cleanup) goes.
    const stale = this.state.heldMounts();
    if (stale.length > 0) {
      this.log.warn(`dockerd started again without a Cleanup: releasing the ${stale.length} layer mount(s) its previous run held`);
      await this.releaseHeld();
    }
    this.state.setInit(init);
    this.log.info(`initialised by dockerd: home ${init.Home}, driver ${this.store.driver.name}, store ${this.store.root}`);
    return json({});
  }

  // ---- layers ----------------------------------------------------------------------------------

  private async status(): Promise<PluginResponse> {
    const info = await this.store.info();
    return json({ Status: [['unionctl driver', info.driver], ['unionctl root', info.root], ...info.status] });
  }

  private async create(req: PluginRequest, writable: boolean): Promise<PluginResponse> {
    const { id, parent, body } = await idArgs(req);
    const storageOpt = storageOptArg(body, req.method);
    await this.store.create({ id, parent, writable, origin: 'image', ...(writable ? { storageOpt } : {}) });
    if (!writable && Object.keys(storageOpt).length > 0) this.log.warn(`Create ${id}: storage options ignored for an image layer`);
    return json({});
  }

  private async remove(req: PluginRequest): Promise<PluginResponse> {
    const { id } = await idArgs(req);
    try {
      await this.store.remove(id);
    } catch (e) {
      // Docker's drivers remove idempotently (dockerd removes a layer whose ApplyDiff failed, which applyDiff already removed).
      if ((e as UnionctlError).code !== 'NOT_FOUND' || (await this.store.driver.exists(id))) throw e;
      this.log.debug(`Remove ${id}: no such layer, nothing to do`);
    }
    return json({});
  }

  private async get(req: PluginRequest): Promise<PluginResponse> {
    const { id, body } = await idArgs(req);
    const mountLabel = stringArg(body, 'MountLabel', req.method, false);
    const { path } = await this.store.mount(id, { mountLabel });
    this.state.addMount(id, 1);
    return json({ Dir: path });
  }

  private async put(req: PluginRequest): Promise<PluginResponse> {
    const { id } = await idArgs(req);
    if (this.state.count(id) === 0) {
      throw new UnionctlError('USAGE', `layer ${id} is not mounted by this plugin`, { hint: 'Put releases a Get of the same layer' });
    }
    this.state.addMount(id, -1); // claimed before the unmount, so two Puts never release one Get twice
    try {
      await this.store.unmount(id);
    } catch (e) {
      // Still mounted (the unmount failed): still held. Not mounted any more (a unionctl cleanup
      // released it) or gone: nothing is held.
      if (!releasedAnyway(e)) this.state.addMount(id, 1);
      throw e;
    }
    return json({});
  }

  private async exists(req: PluginRequest): Promise<PluginResponse> {
    const { id } = await idArgs(req);
    try {
      await this.store.layer(id);
      return json({ Exists: true });
    } catch (e) {
      if ((e as UnionctlError).code === 'NOT_FOUND') return json({ Exists: false });
      throw e;
    }
  }

  private async metadata(req: PluginRequest): Promise<PluginResponse> {
    const { id } = await idArgs(req);
    await this.store.layer(id); // NOT_FOUND for what the store does not hold as a complete layer
    return json({ Metadata: await this.store.driver.metadata(id) });
  }

  /**
   * Releases every reference this plugin holds. A layer that is no longer mounted (a `unionctl
   * cleanup` ran) or gone has nothing left to release; any other failure keeps that reference
   * counted and is rethrown once every layer was tried.
   */
  private async releaseHeld(): Promise<void> {
    let failure: unknown;
    for (const [id, count] of this.state.heldMounts()) {
      for (let i = 0; i < count; i++) {
        this.state.addMount(id, -1);
        try {
          await this.store.unmount(id);
        } catch (e) {
          if (releasedAnyway(e)) {
            this.log.debug(`layer ${id}: not mounted any more (${(e as Error).message}), nothing to release`);
            this.state.addMount(id, -this.state.count(id));
          } else {
            this.state.addMount(id, 1);
            this.log.warn(`could not release the mount of layer ${id}: ${(e as Error).message}`);
            failure ??= e;
          }
          break;
        }
      }
    }
    if (failure !== undefined) throw failure;
  }

  private async cleanup(): Promise<PluginResponse> {
    const held = this.state.heldMounts();
    await this.releaseHeld();
    this.log.info(`cleanup: released ${held.reduce((n, [, c]) => n + c, 0)} mount(s) of ${held.length} layer(s)`);
    return json({});
  }

  // ---- diffs -----------------------------------------------------------------------------------

  private async changes(req: PluginRequest): Promise<PluginResponse> {
    const { id, parent } = await idArgs(req);
    const changes = await this.store.changes(id, { parent });
    return json({ Changes: changes.map((c) => ({ Path: c.path, Kind: CHANGE_KIND[c.kind] })) });
  }

  private async diffSize(req: PluginRequest): Promise<PluginResponse> {
    const { id, parent } = await idArgs(req);
    return json({ Size: await this.store.diffSize(id, { parent }) });
  }

  private async diff(req: PluginRequest): Promise<PluginResponse> {
    const { id, parent } = await idArgs(req);
    const stream: Readable = await this.store.diff(id, { parent });
    return { stream, contentType: 'application/x-tar' };
  }

  private async applyDiff(req: PluginRequest): Promise<PluginResponse> {
    const id = req.query.get('id') ?? '';
    const parent = req.query.get('parent') || undefined;
    if (id === '') throw new UnionctlError('USAGE', 'GraphDriver.ApplyDiff: no ?id= in the query');
    const rec = await this.store.applyDiff(id, req.body, { parent, onWarning: (m) => this.log.warn(`ApplyDiff ${id}: ${m}`) });
    return json({ Size: rec.size });
  }
}
