/**
 * What overlay (v1)'s hardlink farms cost: every image layer's root/ is a full tree whose files
 * are hardlinks of its parent's, so names grow with depth × files while inodes grow only with
 * what each layer changes. Status reports both.
 */
import { lstatSync, readdirSync } from 'node:fs';

export interface FarmInodes {
  /** Paths below the farms (every name counts, dirs included). */
  names: number;
  /** Distinct inodes behind those names. */
  inodes: number;
}

/** Walks the given root/ dirs and counts names and distinct inodes. Missing dirs count nothing. */
export function countFarmInodes(rootDirs: string[]): FarmInodes {
  const seen = new Set<string>();
  let names = 0;
  const walk = (dir: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // removed meanwhile
    }
    for (const entry of entries) {
      const path = `${dir}/${entry.name}`;
      names += 1;
      const st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
      if (st === undefined) continue;
      seen.add(`${st.dev}:${st.ino}`);
      if (entry.isDirectory()) walk(path);
    }
  };
  for (const dir of rootDirs) walk(dir);
  return { names, inodes: seen.size };
}
