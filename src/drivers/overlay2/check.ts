/**
 * overlay2's part of `unionctl check` (graph/check.ts): the l/ links, each layer's link and lower
 * files, work/ and the committed marks, against the store's records. Everything repaired here is
 * rebuilt from the records and the link files, never from a layer's files, and nothing in a diff/
 * is touched: link and lower files are rewritten through the check's transaction (journaled), a
 * symlink is made under a temporary name and renamed into place, so each step is atomic.
 */
import { lstatSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { isValidId } from '../../errors.js';
import { layerIdsIn } from '../../graph/check.js';
import type { CheckedLayer, CheckFinding, DriverCheckContext, RepairTx } from '../../graph/driver.js';
import { mkdirWithMode, readStoreFile } from '../../sys/index.js';
import { isLinkId, LINK_DIR, newLinkId, type Overlay2Layout } from './layout.js';

/** Modes of the files a repair writes (Docker's, as the driver writes them). */
const MODE = { link: 0o644, lower: 0o644, committed: 0o600, work: 0o700 };

/** What the check reads of the home once: which layers have dirs, their link ids, which l/ entries point where. */
interface HomeScan {
  stored: Set<string>;
  /** The LID each layer's link file holds (only valid ones). */
  lidOf: Map<string, string>;
  /** l/<name> → the layer its symlink points to (only well-formed symlinks). */
  linkTarget: Map<string, string>;
  /** Every "l/<LID>" some layer dir's lower file names. */
  namedInLowers: Set<string>;
}

/** Ids of the layer dirs of the home (everything but l/ that is a directory with a layer id's name). */
export function overlay2LayerIds(home: string): string[] {
  return layerIdsIn(home, [LINK_DIR]);
}

/** What every rule of one check reads: the home, what was scanned of it, the records, and the home's path relative to the store root. */
interface Checking {
  layout: Overlay2Layout;
  scan: HomeScan;
  ctx: DriverCheckContext;
  homeRel: string;
}

export function checkOverlay2(layout: Overlay2Layout, ctx: DriverCheckContext, homeRel: string): CheckFinding[] {
  const c: Checking = { layout, scan: scanHome(layout), ctx, homeRel };
  const findings = linkDirFindings(c);
  for (const layer of ctx.layers.values()) {
    if (!c.scan.stored.has(layer.id)) continue; // LAYER_STORAGE_MISSING: the store's
    findings.push(...layerFindings(c, layer));
  }
  return findings;
}

function scanHome(layout: Overlay2Layout): HomeScan {
  const stored = new Set(overlay2LayerIds(layout.home));
  const lidOf = new Map<string, string>();
  for (const id of stored) {
    const lid = readQuietly(layout.linkFile(id));
    if (lid !== undefined && isLinkId(lid)) lidOf.set(id, lid);
  }
  const linkTarget = new Map<string, string>();
  for (const name of linkNames(layout)) {
    const id = symlinkLayer(layout, name);
    if (id !== undefined) linkTarget.set(name, id);
  }
  const namedInLowers = new Set([...stored].flatMap((id) => readQuietly(layout.lowerFile(id))?.split(':') ?? []));
  return { stored, lidOf, linkTarget, namedInLowers };
}

function linkNames(layout: Overlay2Layout): string[] {
  try {
    return readdirSync(layout.linksDir()).filter((n) => !n.startsWith('.'));
  } catch {
    return [];
  }
}

/** The layer l/<name> points to (../<id>/diff), or undefined when it is not such a symlink. */
function symlinkLayer(layout: Overlay2Layout, name: string): string | undefined {
  try {
    const m = /^\.\.\/([^/]+)\/diff$/.exec(readlinkSync(layout.linkPath(name)));
    return m !== null && isValidId(m[1]) ? m[1] : undefined;
  } catch {
    return undefined;
  }
}

/** A store file's text, or undefined when it is missing or not a plain file (the check reports; it does not throw). */
function readQuietly(path: string): string | undefined {
  try {
    return readStoreFile(path, 'overlay2 layout file');
  } catch {
    return undefined;
  }
}

// ---- l/ -----------------------------------------------------------------------------------------

/** Every l/ entry: not a symlink to a layer's diff, pointing to no layer, or not the link its layer's link file names. */
function linkDirFindings({ layout, scan, homeRel }: Checking): CheckFinding[] {
  const findings: CheckFinding[] = [];
  for (const name of linkNames(layout)) {
    const subject = `${homeRel}/${LINK_DIR}/${name}`;
    const path = layout.linkPath(name);
    const unlink = (what: string) => (rtx: RepairTx) => {
      rtx.afterCommit(async () => rmSync(path, { force: true }));
      return `removed ${what} ${subject}`;
    };
    if (lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink() !== true) {
      findings.push({
        code: 'LINK_NOT_SYMLINK',
        subject,
        message: `${subject} is not a symbolic link: l/ holds only links to layers' diff dirs`,
        repair: 'it may be data someone put there; move it away by hand',
        when: 'never',
      });
      continue;
    }
    const id = scan.linkTarget.get(name);
    if (id === undefined || !isLinkId(name)) {
      findings.push({
        code: 'LINK_BAD',
        subject,
        message: `${subject} is not a link named by a 26-character link id to ../<layer id>/diff`,
        repair: 'remove the symbolic link (only the link; what it points to stays)',
        when: 'default',
        fix: unlink('the bad link'),
      });
    } else if (!scan.stored.has(id) || lstatSync(layout.diffDir(id), { throwIfNoEntry: false }) === undefined) {
      findings.push({
        code: 'LINK_DANGLING',
        subject,
        message: `${subject} points to ../${id}/diff, which does not exist`,
        repair: 'remove the dangling link',
        when: 'default',
        fix: unlink('the dangling link'),
      });
    } else if (scan.lidOf.has(id) && scan.lidOf.get(id) !== name) {
      findings.push({
        code: 'LINK_DUPLICATE',
        subject,
        message: `${subject} points to layer ${id}, whose link file names l/${scan.lidOf.get(id)!}`,
        repair: "remove this second link (the lower files that name it are rebuilt with the layer's own)",
        when: 'default',
        fix: unlink('the duplicate link'),
      });
    }
  }
  return findings;
}

// ---- one layer ------------------------------------------------------------------------------------

function layerFindings(c: Checking, layer: CheckedLayer): CheckFinding[] {
  const { layout } = c;
  const id = layer.id;
  if (lstatSync(layout.diffDir(id), { throwIfNoEntry: false })?.isDirectory() !== true) {
    return [
      {
        code: 'LAYER_INCOMPLETE',
        subject: id,
        message: `overlay2 layer ${id} has no diff/ directory: its files are gone`,
        repair: "the layer's content cannot be rebuilt; remove it (unionctl rm) and import it again",
        when: 'never',
      },
    ];
  }
  return [...linkFileFindings(c, id), ...lowerFindings(c, layer), ...workFindings(c, layer), ...committedFindings(c, id)];
}

/** The link file and the l/ link it names. */
function linkFileFindings({ layout, scan, homeRel }: Checking, id: string): CheckFinding[] {
  const lid = scan.lidOf.get(id);
  if (lid === undefined) {
    const text = readQuietly(layout.linkFile(id));
    // An l/ entry that points here already (the link file was lost, not the link) is taken over.
    const existing = [...scan.linkTarget].find(([name, target]) => target === id && isLinkId(name))?.[0];
    return [
      {
        code: text === undefined ? 'LINK_FILE_MISSING' : 'LINK_FILE_BAD',
        subject: `${homeRel}/${id}/link`,
        message:
          text === undefined
            ? `overlay2 layer ${id} has no link file`
            : `overlay2 link file of layer ${id} holds ${JSON.stringify(text.slice(0, 40))}, not a 26-character link id`,
        repair:
          existing === undefined
            ? 'write a new link id into it and make its l/ link'
            : `write l/${existing}'s id into it (that link points to the layer)`,
        when: 'default',
        fix: (rtx) => {
          const newLid = existing ?? newLinkId();
          rtx.write(`${homeRel}/${id}/link`, newLid, { mode: MODE.link });
          if (existing === undefined) rtx.afterCommit(async () => placeLink(layout, newLid, id));
          return `wrote link id ${newLid} into ${homeRel}/${id}/link`;
        },
      },
    ];
  }
  if (scan.linkTarget.get(lid) === id) return [];
  const taken = scan.linkTarget.get(lid);
  if (taken !== undefined) {
    return [
      {
        code: 'LINK_CONFLICT',
        subject: `${homeRel}/${LINK_DIR}/${lid}`,
        message: `overlay2 layer ${id}'s link file names l/${lid}, which points to layer ${taken}`,
        repair: 'two layers claim one link id; remove one of them (unionctl rm) and import it again',
        when: 'never',
      },
    ];
  }
  return [
    {
      code: 'LINK_MISSING',
      subject: `${homeRel}/${LINK_DIR}/${lid}`,
      message: `overlay2 layer ${id}'s link l/${lid} is missing or does not point to ../${id}/diff`,
      repair: `make l/${lid} → ../${id}/diff`,
      when: 'default',
      fix: (rtx) => {
        rtx.afterCommit(async () => placeLink(layout, lid, id));
        return `made l/${lid} → ../${id}/diff`;
      },
    },
  ];
}

/** l/<lid> → ../<id>/diff, made under a temporary name and renamed over whatever is there (atomic, idempotent). */
function placeLink(layout: Overlay2Layout, lid: string, id: string): void {
  const tmp = join(layout.linksDir(), `.${lid}.${process.pid}.tmp`);
  rmSync(tmp, { force: true });
  symlinkSync(join('..', id, 'diff'), tmp);
  renameSync(tmp, layout.linkPath(lid));
}

/** The lower file against the records' chain: "l/<LID parent>:l/<LID grandparent>:…". */
function lowerFindings({ layout, scan, ctx, homeRel }: Checking, layer: CheckedLayer): CheckFinding[] {
  const subject = `${homeRel}/${layer.id}/lower`;
  const actual = readQuietly(layout.lowerFile(layer.id));
  if (layer.parent === undefined) {
    if (actual === undefined) return [];
    return [
      {
        code: 'LOWER_UNEXPECTED',
        subject,
        message: `overlay2 layer ${layer.id} has no parent but a lower file`,
        repair: 'delete the lower file',
        when: 'default',
        fix: (rtx) => {
          rtx.delete(subject);
          return `deleted ${subject}`;
        },
      },
    ];
  }
  const expected = expectedLower(scan, ctx, layer);
  if (expected === undefined || actual === expected) return []; // an ancestor without a link id: its LINK_FILE finding comes first
  const missingLink = actual?.split(':').find((e) => !scan.linkTarget.has(e.slice(LINK_DIR.length + 1)));
  const base =
    actual === undefined
      ? { code: 'LOWER_MISSING', message: `overlay2 layer ${layer.id} has a parent but no lower file` }
      : missingLink !== undefined
        ? { code: 'LOWER_MISSING_LINK', message: `overlay2 lower file of layer ${layer.id} names ${missingLink}, which is no link` }
        : { code: 'LOWER_WRONG', message: `overlay2 lower file of layer ${layer.id} does not name its ancestors' links in order` };
  return [
    {
      ...base,
      subject,
      repair: `write the ancestors' links into it: ${expected}`,
      when: 'default',
      fix: (rtx) => {
        rtx.write(subject, expected, { mode: MODE.lower });
        return `rewrote ${subject}`;
      },
    },
  ];
}

/** The lower file the records call for, or undefined when an ancestor has no known link id (or no record). */
function expectedLower(scan: HomeScan, ctx: DriverCheckContext, layer: CheckedLayer): string | undefined {
  const entries: string[] = [];
  const seen = new Set<string>();
  for (let p = layer.parent; p !== undefined; p = ctx.layers.get(p)?.parent) {
    const lid = scan.lidOf.get(p);
    if (lid === undefined || !ctx.layers.has(p) || seen.has(p)) return undefined;
    seen.add(p);
    entries.push(`${LINK_DIR}/${lid}`);
  }
  return entries.join(':');
}

function workFindings({ layout, homeRel }: Checking, layer: CheckedLayer): CheckFinding[] {
  if (layer.parent === undefined || lstatSync(layout.workDir(layer.id), { throwIfNoEntry: false }) !== undefined) return [];
  return [
    {
      code: 'WORK_MISSING',
      subject: `${homeRel}/${layer.id}/work`,
      message: `overlay2 layer ${layer.id} has a parent but no work/ directory (overlayfs needs one to mount it)`,
      repair: 'make an empty work/ (0700)',
      when: 'default',
      fix: (rtx) => {
        rtx.afterCommit(async () => {
          if (lstatSync(layout.workDir(layer.id), { throwIfNoEntry: false }) === undefined)
            mkdirWithMode(layout.workDir(layer.id), MODE.work);
        });
        return `made ${homeRel}/${layer.id}/work`;
      },
    },
  ];
}

/**
 * The committed mark: there exactly while a layer is built on this one (the driver writes it with
 * the first child and deletes it with the last). A child counts when a record says so, or when a
 * layer dir's lower file names this layer's link (a create running now, outside the lock).
 */
function committedFindings({ layout, scan, ctx, homeRel }: Checking, id: string): CheckFinding[] {
  const subject = `${homeRel}/${id}/committed`;
  const hasChild = [...ctx.layers.values()].some((l) => l.parent === id);
  const lid = scan.lidOf.get(id);
  const named = lid !== undefined && scan.namedInLowers.has(`${LINK_DIR}/${lid}`);
  const marked = layout.isCommitted(id);
  if (hasChild && !marked) {
    return [
      {
        code: 'COMMITTED_MISSING',
        subject,
        message: `overlay2 layer ${id} has child layers but no committed mark (it would be mounted writable)`,
        repair: 'write the mark',
        when: 'default',
        fix: (rtx) => {
          rtx.write(subject, '', { mode: MODE.committed });
          return `wrote ${subject}`;
        },
      },
    ];
  }
  if (marked && !hasChild && !named) {
    return [
      {
        code: 'COMMITTED_STALE',
        subject,
        message: `overlay2 layer ${id} is marked committed but nothing is built on it`,
        repair: 'delete the mark (as removing its last child does)',
        when: 'default',
        fix: (rtx) => {
          rtx.delete(subject);
          return `deleted ${subject}`;
        },
      },
    ];
  }
  return [];
}
