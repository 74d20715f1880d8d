/**
 * Image references as docker and podman read them: `[host[:port]/]path[:tag][@digest]`.
 *
 * - The first component is a registry host when it has a '.' or a ':' or is `localhost`;
 *   otherwise the registry is Docker Hub (`docker.io`, served at registry-1.docker.io) and a
 *   one-component path gets `library/` in front (`busybox` → `docker.io/library/busybox`).
 * - No tag and no digest means `:latest`. With a digest, the digest is what is fetched; a tag
 *   beside it only names the image.
 * - Path components are lowercase `[a-z0-9]+` joined by `.`, `_`, `__` or `-`; a tag is
 *   `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; a digest `sha256:` and 64 hex digits.
 */
import { UnionctlError } from '../../errors.js';

export const DOCKER_HUB = 'docker.io';
/** Where Docker Hub's registry API answers. */
const DOCKER_HUB_API = 'registry-1.docker.io';

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const HOST =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

export interface ImageReference {
  /** The registry as named: `docker.io`, `127.0.0.1:5000`. */
  registry: string;
  /** The repository within it: `library/busybox`, `sample/app`. */
  repository: string;
  tag?: string;
  digest?: string;
}

/** Parses REF; USAGE naming the part that is wrong. */
export function parseReference(ref: string): ImageReference {
  const bad = (why: string) =>
    new UnionctlError('USAGE', `${JSON.stringify(ref)} is not an image reference: ${why}`, {
      hint: 'write [host[:port]/]name[:tag|@sha256:digest], e.g. 127.0.0.1:5000/sample/app:1 or busybox',
    });
  if (ref === '') throw bad('it is empty');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(`the digest ${JSON.stringify(digest)} is not sha256: and 64 lowercase hex digits`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`the tag ${JSON.stringify(tag)} has characters a tag cannot have`);
  }
  const parts = rest.split('/');
  const first = parts[0]!;
  let registry = DOCKER_HUB;
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    if (!HOST.test(first)) throw bad(`the registry ${JSON.stringify(first)} is not a host[:port]`);
    registry = first;
    parts.shift();
  }
  if (parts.length === 0 || parts.some((p) => !PATH_COMPONENT.test(p))) {
    throw bad('a repository name is lowercase letters and digits, with . _ - between them, and / between components');
  }
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  const repository = parts.join('/');
  if (repository.length > 255) throw bad('the repository name is longer than 255 characters');
  const named = tag ?? (digest === undefined ? 'latest' : undefined);
  return { registry, repository, ...(named === undefined ? {} : { tag: named }), ...(digest === undefined ? {} : { digest }) };
}

/** The host the registry's API answers on (Docker Hub's is not docker.io). */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/** `registry/repository` */
export function repositoryName(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** The name an image pulled by REF gets in the store, as podman names it: `docker.io/library/busybox:latest`; a digest-only ref names none. */
export function imageName(ref: ImageReference): string | undefined {
  return ref.tag === undefined ? undefined : `${repositoryName(ref)}:${ref.tag}`;
}

/** What the registry is asked for: the digest when there is one, else the tag. */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

/** The whole reference, normalized: for messages. */
export function formatReference(ref: ImageReference): string {
  return `${repositoryName(ref)}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}
