/** Images: load, list, remove and save Docker and OCI image archives on top of the layer store. */
export { loadImages } from './load.js';
export type { LoadOptions, LoadProgress, LoadedImage } from './load.js';
export { saveImages } from './save.js';
export { commitLayer } from './commit.js';
export type { CommitOptions, CommittedImage } from './commit.js';
export type { SaveOptions, SaveFormat, SavedImage } from './save.js';
export { listImages, imageSummary, getImage, removeImage, resolveLayerRef, tagImage, untagImage } from './images.js';
export type { ImageSummary, RemoveImageResult, TagResult } from './images.js';
export { inspect, imageHistory } from './inspect.js';
export { prune } from './prune.js';
export { diskUsage } from './df.js';
export type { DiskUsage, ImageUsage, LayerUsage } from './df.js';
export type { PruneResult } from './prune.js';
export type { LayerInspection, ImageInspection, HistoryEntry } from './inspect.js';
export type { ImageRecord, ImageLayerRef } from './records.js';
export { MEDIA } from './manifest.js';
export type { LayerCompression } from './manifest.js';
export { imageStoreExtension } from './records.js';
export { exportStorage, removeExport, listExports, syncContainersStorage, containersStorageExtension } from './containers-storage/index.js';
export type { ExportSummary, ExportOptions } from './containers-storage/index.js';
export { pullImage, pushImage, parseReference, formatReference, parsePlatform, plainHttpFor, RegistryClient } from './registry/index.js';
export { authFilePath, parseCreds, removeCredentials, storeCredentials, storedCredentials } from './registry/index.js';
export type {
  PullOptions,
  PullProgress,
  PulledImage,
  PushOptions,
  PushProgress,
  PushedImage,
  PushedBlob,
  ImageReference,
  Credentials,
} from './registry/index.js';
export { adoptStore, readForeignStore, FOREIGN_KINDS } from './adopt/index.js';
export type { AdoptOptions, AdoptedStore, ForeignKind } from './adopt/index.js';
