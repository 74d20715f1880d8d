/**
 * overlay (v1)'s part of `unionctl check` (graph/check.ts): each layer is either an image layer
 * (root/) or an overlay child whose lower-id names the nearest image layer below it, as the
 * records chain them; and no temporary farm (tmproot*) of a killed apply is left in a layer.
 * A lower-id is rewritten from the records through the check's transaction; nothing in root/ or
 * upper/ is touched.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { CheckedLayer, CheckFinding, DriverCheckContext } from '../../graph/driver.js';
import { readStoreFile, removeStoreTree } from '../../sys/index.js';
import { isDir, LOWER_ID, TMP_ROOT_PREFIX, type OverlayLayout } from './layout.js';

export function checkOverlay(layout: OverlayLayout, ctx: DriverCheckContext, homeRel: string): CheckFinding[] {
  const findings: CheckFinding[] = [];
  for (const layer of ctx.layers.values()) {
    if (!isDir(layout.layerDir(layer.id))) continue; // LAYER_STORAGE_MISSING: the store's
    findings.push(...lowerIdFindings(layout, ctx, layer, homeRel), ...farmLeftovers(layout, layer.id, homeRel));
  }
  return findings;
}

/** The image layer (with root/) nearest below `layer` as the records chain them; undefined when there is none. */
function expectedLowerId(layout: OverlayLayout, ctx: DriverCheckContext, layer: CheckedLayer): string | undefined {
  const seen = new Set<string>();
  for (let p = layer.parent; p !== undefined && !seen.has(p); p = ctx.layers.get(p)?.parent) {
    seen.add(p);
    if (isDir(layout.rootDir(p))) return p;
  }
  return undefined;
}

function lowerIdFindings(layout: OverlayLayout, ctx: DriverCheckContext, layer: CheckedLayer, homeRel: string): CheckFinding[] {
  if (isDir(layout.rootDir(layer.id))) return [];
  const subject = `${homeRel}/${layer.id}/${LOWER_ID}`;
  if (!isDir(layout.upperDir(layer.id))) {
    return [
      {
        code: 'LAYER_INCOMPLETE',
        subject: layer.id,
        message: `overlay layer ${layer.id} has neither root/ nor upper/: its files are gone`,
        repair: "the layer's content cannot be rebuilt; remove it (unionctl rm) and import it again",
        when: 'never',
      },
    ];
  }
  let actual: string | undefined;
  try {
    actual = readStoreFile(layout.lowerIdFile(layer.id), 'overlay lower-id file');
  } catch {
    actual = '';
  }
  const expected = expectedLowerId(layout, ctx, layer);
  if (expected === undefined) {
    return [
      {
        code: 'LOWER_ID_BROKEN',
        subject,
        message: `overlay layer ${layer.id} is an overlay child, but no layer below it has a root/ to be its lower`,
        repair: 'the image layer it was built on is gone; remove the layer (unionctl rm)',
        when: 'never',
      },
    ];
  }
  if (actual?.trim() === expected) return []; // the driver reads it trimmed
  return [
    {
      code: actual === undefined ? 'LOWER_ID_MISSING' : 'LOWER_ID_WRONG',
      subject,
      message:
        actual === undefined
          ? `overlay layer ${layer.id} has upper/ but no lower-id file`
          : `overlay lower-id of layer ${layer.id} holds ${JSON.stringify(actual.slice(0, 80))}, not ${expected} (the nearest image layer below it)`,
      repair: `write ${expected} into it`,
      when: 'default',
      fix: (rtx) => {
        rtx.write(subject, expected, { mode: 0o600 });
        return `wrote ${expected} into ${subject}`;
      },
    },
  ];
}

/** tmproot* dirs inside a complete layer: the farm of an apply or seal that was killed (the layer is as it was before it). */
function farmLeftovers(layout: OverlayLayout, id: string, homeRel: string): CheckFinding[] {
  return readdirSync(layout.layerDir(id))
    .filter((n) => n.startsWith(TMP_ROOT_PREFIX))
    .map((n) => ({
      code: 'STAGING_LEFTOVER',
      subject: `${homeRel}/${id}/${n}`,
      message: `overlay layer ${id} holds ${n}, the temporary farm of an apply that was killed`,
      repair: 'delete it (the layer never used it)',
      when: 'default' as const,
      fix: (rtx) => {
        rtx.afterCommit(async () => removeStoreTree(layout.home, join(id, n), 'overlay temporary root dir'));
        return `deleted ${homeRel}/${id}/${n}`;
      },
    }));
}
