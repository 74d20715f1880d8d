import type { Driver } from '../../src/graph/driver.js';
import { overlayEntry } from '../../src/drivers/overlay/index.js';
import { runDriverConformance } from './suite.js';

/**
 * overlay (v1): an image layer's own files are its whole tree in root/ (metadata RootDir), a
 * writable layer's are in upper/. One lowerdir per mount, so no depth limit: the chains only show
 * that reading through many hardlink farms stays right.
 */
async function ownFiles(driver: Driver, id: string): Promise<string> {
  const meta = await driver.metadata(id);
  const dir = meta.RootDir ?? meta.UpperDir;
  if (dir === undefined) throw new Error(`overlay: metadata(${id}) names neither RootDir nor UpperDir`);
  return dir;
}

runDriverConformance(overlayEntry, { deeperChains: [260], layerFilesDir: ownFiles, hardlinkFarms: true });
