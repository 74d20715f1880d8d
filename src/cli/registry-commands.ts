/**
 * The registry commands: pull, push, login, logout. Thin: each is a call into
 * src/image/registry/ and a print.
 */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import type { WithStore } from './store-access.js';
import { UnionctlError } from '../errors.js';
import {
  authFilePath,
  parseCreds,
  parseReference,
  plainHttpFor,
  pullImage,
  pushImage,
  RegistryClient,
  removeCredentials,
  storeCredentials,
  type LayerCompression,
} from '../image/index.js';
import { nonEmpty } from './args.js';
import { layersDone, out, printJson, println, printWarning, shortImageId, shownName } from './output.js';
import { reusedLayers, storedImageJson } from './json-shapes.js';
import { startLayerProgress } from './progress.js';
import { insecureRegistries } from './settings.js';

interface RegistryCliOptions {
  creds?: string;
  insecure?: boolean;
  authfile?: string;
}

interface PullCliOptions extends RegistryCliOptions {
  platform?: string;
  maxConcurrentDownloads?: string;
}

interface PushCliOptions extends RegistryCliOptions {
  compress: LayerCompression;
  format: 'docker' | 'oci';
  chunkSize?: string;
  mountFrom?: string;
}

/** The library's registry options: the flags, and the registries storage.conf lists as insecure (plain HTTP). */
function registryOptions(opts: RegistryCliOptions, cmd: Command) {
  return { creds: opts.creds, insecure: opts.insecure, insecureRegistries: insecureRegistries(cmd), authFile: opts.authfile };
}

async function pullCommand(withStore: WithStore, ref: string, opts: PullCliOptions, cmd: Command): Promise<void> {
  parseReference(ref); // a bad reference fails before the store is opened
  const downloads = opts.maxConcurrentDownloads;
  if (downloads !== undefined && !/^[1-9][0-9]?$/.test(downloads))
    throw new UnionctlError('USAGE', `--max-concurrent-downloads ${downloads} is not a whole number from 1 to 99`, {
      hint: 'e.g. --max-concurrent-downloads 3 (the default); 1 pulls one layer at a time',
    });
  await withStore(
    cmd,
    async (store, g) => {
      const progress = startLayerProgress('pulling');
      let pulled;
      try {
        pulled = await pullImage(store, ref, {
          ...registryOptions(opts, cmd),
          platform: opts.platform,
          maxConcurrentDownloads: downloads === undefined ? undefined : Number(downloads),
          onProgress: progress.onProgress,
        });
      } finally {
        progress.done();
      }
      if (g.json) {
        return printJson({
          image: await storedImageJson(store, pulled.id),
          reference: pulled.reference,
          manifestDigest: pulled.manifestDigest,
          indexDigest: pulled.indexDigest ?? null,
          platform: pulled.platform ?? null,
          reusedLayers: reusedLayers(pulled.layers),
        });
      }
      println(`Pulled ${shownName(pulled.reference)} (${shortImageId(pulled.id)}, ${layersDone(pulled.layers)})`);
      println(out.dim(`Digest: ${pulled.manifestDigest}`));
    },
    { creates: true },
  );
}

async function pushCommand(
  withStore: WithStore,
  image: string,
  dest: string | undefined,
  opts: PushCliOptions,
  cmd: Command,
): Promise<void> {
  if (dest !== undefined) parseReference(dest);
  const chunkSize = opts.chunkSize === undefined ? undefined : Number(opts.chunkSize);
  if (chunkSize !== undefined && (!Number.isInteger(chunkSize) || chunkSize <= 0))
    throw new UnionctlError('USAGE', `--chunk-size ${opts.chunkSize} is not a positive number of bytes`);
  await withStore(cmd, async (store, g) => {
    const progress = startLayerProgress('pushing');
    let pushed;
    try {
      pushed = await pushImage(store, image, dest, {
        ...registryOptions(opts, cmd),
        compress: opts.compress,
        format: opts.format,
        chunkSize,
        mountFrom: opts.mountFrom,
        onWarning: printWarning,
        onProgress:
          progress.onProgress === undefined
            ? undefined
            : (p) => {
                if (p.event === 'sending' && p.layer !== undefined)
                  progress.onProgress!({ layer: p.layer, layers: p.layers, bytes: p.bytes ?? 0 });
              },
      });
    } finally {
      progress.done();
    }
    if (g.json) return printJson(pushed);
    const count = (how: string) => pushed.layers.filter((l) => l.how === how).length;
    println(
      `Pushed ${shownName(pushed.reference)} (${shortImageId(pushed.id)}: ${count('uploaded')} layers uploaded, ${count('exists')} already there, ${count('mounted')} mounted)`,
    );
    println(out.dim(`Digest: ${pushed.manifestDigest}`));
  });
}

interface LoginCliOptions {
  username?: string;
  password?: string;
  passwordStdin?: boolean;
  insecure?: boolean;
  authfile?: string;
}

async function loginCommand(registry: string, opts: LoginCliOptions, cmd: Command): Promise<void> {
  const password = opts.passwordStdin ? readFileSync(0, 'utf8').replace(/\r?\n$/, '') : opts.password;
  if (opts.username === undefined || password === undefined) {
    throw new UnionctlError('USAGE', 'login needs --username and --password (or --password-stdin)', {
      hint: `echo "$PASSWORD" | unionctl login ${registry} -u USER --password-stdin`,
    });
  }
  const creds = parseCreds(`${opts.username}:${password}`);
  // Checked against the registry before it is filed: a wrong password is not saved.
  const insecure = plainHttpFor(registry, registryOptions(opts, cmd));
  await new RegistryClient({ registry, repository: 'library/unionctl-login', insecure, creds, actions: 'pull' }).ping();
  const file = opts.authfile ?? authFilePath();
  storeCredentials(registry, creds, file);
  if (cmd.optsWithGlobals<{ json?: boolean }>().json === true) return printJson({ registry, authFile: file });
  println(`Login Succeeded (credentials for ${registry} in ${shownName(file)})`);
}

function logoutCommand(registry: string, opts: { authfile?: string }, cmd: Command): void {
  const file = opts.authfile ?? authFilePath();
  if (!removeCredentials(registry, file))
    throw new UnionctlError('NOT_FOUND', `not logged in to ${registry} (no entry in ${file})`, { hint: 'nothing to do' });
  if (cmd.optsWithGlobals<{ json?: boolean }>().json === true) return printJson({ registry, authFile: file });
  println(`Removed login credentials for ${registry}`);
}

const credsOption = () => new Option('--creds <user:password>', 'credentials (default: the auth file, else anonymous)');
const insecureOption = () =>
  new Option('--insecure', 'plain HTTP, no TLS (a registry on 127.0.0.1 for tests); storage.conf may list registries that always are');
const authfileOption = () => new Option('--authfile <file>', 'auth file (default $REGISTRY_AUTH_FILE, else ~/.docker/config.json)');

/** Adds pull, push, login and logout to the program. */
export function addRegistryCommands(program: Command, withStore: WithStore): void {
  program
    .command('pull')
    .description('pull an image from a registry into the store')
    .argument('<ref>', "[host[:port]/]name[:tag|@digest] (short names are Docker Hub's)", nonEmpty('the image reference'))
    .option('--platform <os/arch[/variant]>', "the image of a multi-platform index to pull (default: this host's)")
    .option('--max-concurrent-downloads <n>', 'layers downloaded and applied at once (default 3)')
    .addOption(credsOption())
    .addOption(insecureOption())
    .addOption(authfileOption())
    .action((ref: string, opts: PullCliOptions, cmd: Command) => pullCommand(withStore, ref, opts, cmd));

  program
    .command('push')
    .description('push an image of the store to a registry')
    .argument('<image>', 'name or id in the store', nonEmpty('the image'))
    .argument('[ref]', 'where to: [host[:port]/]name[:tag] (default: the image name)')
    .addOption(new Option('--compress <kind>', 'layer compression').choices(['none', 'gzip', 'zstd']).default('gzip'))
    .addOption(new Option('--format <format>', 'manifest format (zstd needs oci)').choices(['docker', 'oci']).default('docker'))
    .option('--chunk-size <bytes>', 'upload blobs in chunks of this size (default: one request per blob)')
    .option('--mount-from <repository>', 'mount blobs from this repository of the same registry when it has them')
    .addOption(credsOption())
    .addOption(insecureOption())
    .addOption(authfileOption())
    .action((image: string, ref: string | undefined, opts: PushCliOptions, cmd: Command) => pushCommand(withStore, image, ref, opts, cmd));

  program
    .command('login')
    .description('check credentials against a registry and keep them in the auth file')
    .argument('<registry>', 'host[:port]', nonEmpty('the registry'))
    .option('-u, --username <user>', 'user name')
    .option('-p, --password <password>', 'password (prefer --password-stdin)')
    .option('--password-stdin', 'read the password from stdin')
    .addOption(insecureOption())
    .addOption(authfileOption())
    .action((registry: string, opts: LoginCliOptions, cmd: Command) => loginCommand(registry, opts, cmd));

  program
    .command('logout')
    .description('remove the credentials of a registry from the auth file')
    .argument('<registry>', 'host[:port]', nonEmpty('the registry'))
    .addOption(authfileOption())
    .action((registry: string, opts: { authfile?: string }, cmd: Command) => logoutCommand(registry, opts, cmd));
}
