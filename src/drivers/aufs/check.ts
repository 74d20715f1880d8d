/**
 * aufs's part of `unionctl check` (graph/check.ts): each layer's layers/<id> file must list its
 * ancestors as the records chain them (nearest first), its diff/<id> must be there, and no
 * `<id>-removing` dir of a killed removal may be left. A layers file is rewritten from the records
 * through the check's transaction; nothing in diff/ is touched.
 */
import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { layerIdsIn } from '../../graph/check.js';
import type { CheckedLayer, CheckFinding, DriverCheckContext } from '../../graph/driver.js';
import { findMount, readStoreFile, removeStoreTree } from '../../sys/index.js';
import { FUSE_FSTYPE, fuseProcesses, type FuseProcess } from './fuse.js';
import { DIFF, LAYERS, MNT, MODE, REMOVING_SUFFIX, type AufsLayout } from './layout.js';

/** Ids with a layers/ file or a diff/ dir (not the -removing dirs of removals). */
export function aufsLayerIds(layout: AufsLayout): string[] {
  const ids = new Set([...layerFiles(layout), ...layerIdsIn(layout.diffRoot())]);
  return [...ids].filter((id) => !id.endsWith(REMOVING_SUFFIX)).sort();
}

function layerFiles(layout: AufsLayout): string[] {
  try {
    return layout.layerIds();
  } catch {
    return [];
  }
}

export function checkAufs(layout: AufsLayout, ctx: DriverCheckContext, homeRel: string): CheckFinding[] {
  const findings: CheckFinding[] = [...removingLeftovers(layout, homeRel), ...orphanFuseProcesses(layout, homeRel)];
  for (const layer of ctx.layers.values()) {
    if (!layout.hasAnyPart(layer.id)) continue; // LAYER_STORAGE_MISSING: the store's
    if (lstatSync(layout.diffDir(layer.id), { throwIfNoEntry: false })?.isDirectory() !== true) {
      findings.push({
        code: 'LAYER_INCOMPLETE',
        subject: layer.id,
        message: `aufs layer ${layer.id} has no diff/${layer.id} directory: its files are gone`,
        repair: "the layer's content cannot be rebuilt; remove it (unionctl rm) and import it again",
        when: 'never',
      });
      continue;
    }
    findings.push(...layersFileFindings(layout, ctx, layer, homeRel));
  }
  return findings;
}

/** The ancestors as the records chain them, nearest first; undefined when one has no complete record. */
function ancestorsOf(ctx: DriverCheckContext, layer: CheckedLayer): string[] | undefined {
  const ids: string[] = [];
  for (let p = layer.parent; p !== undefined; p = ctx.layers.get(p)?.parent) {
    if (!ctx.layers.has(p) || ids.includes(p)) return undefined;
    ids.push(p);
  }
  return ids;
}

function layersFileFindings(layout: AufsLayout, ctx: DriverCheckContext, layer: CheckedLayer, homeRel: string): CheckFinding[] {
  const ancestors = ancestorsOf(ctx, layer);
  if (ancestors === undefined) return []; // LAYER_PARENT_MISSING: the store's
  const subject = `${homeRel}/${LAYERS}/${layer.id}`;
  let text: string | undefined;
  try {
    text = readStoreFile(layout.layersFile(layer.id), 'aufs layers file');
  } catch {
    text = '\0'; // not a plain file: wrong, whatever it holds
  }
  const listed = text?.split('\n').filter((l) => l !== '');
  if (listed !== undefined && listed.join('\n') === ancestors.join('\n')) return [];
  const expected = ancestors.map((a) => `${a}\n`).join('');
  return [
    {
      code: text === undefined ? 'LAYERS_FILE_MISSING' : 'LAYERS_FILE_WRONG',
      subject,
      message:
        text === undefined
          ? `aufs layer ${layer.id} has diff/ but no layers file`
          : `aufs layers file of layer ${layer.id} does not list its ancestors (${ancestors.join(', ') || 'none'}) nearest first`,
      repair: `write the ancestors into it, one per line: ${ancestors.join(', ') || '(empty: a base layer)'}`,
      when: 'default',
      fix: (rtx) => {
        rtx.write(subject, expected, { mode: MODE.layersFile });
        return `rewrote ${subject}`;
      },
    },
  ];
}

/** diff/<id>-removing and mnt/<id>-removing that opening the store could not delete (a mount inside). */
function removingLeftovers(layout: AufsLayout, homeRel: string): CheckFinding[] {
  const findings: CheckFinding[] = [];
  for (const top of [DIFF, MNT]) {
    let names: string[] = [];
    try {
      names = readdirSync(join(layout.home, top)).filter((n) => n.endsWith(REMOVING_SUFFIX));
    } catch {
      continue;
    }
    for (const n of names) {
      findings.push({
        code: 'STAGING_LEFTOVER',
        subject: `${homeRel}/${top}/${n}`,
        message: `${homeRel}/${top}/${n} is left from a removal that was killed`,
        repair: 'delete it (refused while something is mounted inside)',
        when: 'default',
        fix: (rtx) => {
          rtx.afterCommit(async () => removeStoreTree(layout.home, join(top, n), `aufs ${top} dir`));
          return `deleted ${homeRel}/${top}/${n}`;
        },
      });
    }
  }
  return findings;
}

/**
 * fuse-overlayfs processes serving a mount point of this home that has no FUSE mount: left by an
 * unmount that could not wait for them (a detached busy mount whose users are gone). A mount
 * being made has its process for a moment before the mount is there, so the fix looks again
 * just before it stops the process.
 */
function orphanFuseProcesses(layout: AufsLayout, homeRel: string): CheckFinding[] {
  const mnt = `${join(layout.home, MNT)}/`;
  const orphaned = (p: FuseProcess): boolean => {
    const target = p.argv[p.argv.length - 1]!;
    return target.startsWith(mnt) && findMount(target)?.fsType !== FUSE_FSTYPE;
  };
  return fuseProcesses()
    .filter(orphaned)
    .map((p) => ({
      code: 'FUSE_ORPHAN',
      subject: `${homeRel}/${p.argv[p.argv.length - 1]!.slice(layout.home.length + 1)}`,
      message: `fuse-overlayfs (pid ${p.pid}) serves ${p.argv[p.argv.length - 1]!}, where nothing is mounted`,
      repair: 'stop the process (SIGTERM)',
      when: 'default' as const,
      fix: (rtx) => {
        rtx.afterCommit(async () => {
          const now = fuseProcesses().find((q) => q.pid === p.pid && q.argv.join('\0') === p.argv.join('\0'));
          if (now !== undefined && orphaned(now)) process.kill(p.pid, 'SIGTERM');
        });
        return `stopped fuse-overlayfs pid ${p.pid}`;
      },
    }));
}
