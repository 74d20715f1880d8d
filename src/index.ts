/**
 * unionctl as a library: `import { openStore } from 'unionctl'`.
 *
 * This file only re-exports. The store (openStore / LayerStore) is the entry point most code
 * needs; the driver interface and registry are for writing drivers; the archive and sys pieces
 * are the building blocks the drivers use (tar in and out, change detection, mount table, kernel
 * feature probes), exported for tools that want them on their own.
 *
 * It is also the composition root: importing it registers the built-in drivers and the image
 * records' store extension (remove guards, recovery of interrupted loads), which the layers
 * below (graph/) know nothing about.
 */
import { registerBuiltinDrivers } from './drivers/index.js';
import { registerStoreExtension } from './graph/store.js';
import { containersStorageExtension, imageStoreExtension } from './image/index.js';
import { snapshotStoreExtension } from './serve/containerd/snapshots.js';

registerBuiltinDrivers();
registerStoreExtension(imageStoreExtension);
registerStoreExtension(containersStorageExtension);
registerStoreExtension(snapshotStoreExtension);

// The layer store
export { openStore, LayerStore, StoreTx, DEFAULT_STORE_ROOT, chainIdOf, registerStoreExtension } from './graph/store.js';
export type {
  StoreOptions,
  StoreInfo,
  LayerRecord,
  StoredRecord,
  StoreExtension,
  ImportOptions,
  ApplyDiffOptions,
  CreateLayerOptions,
  MountEntry,
  MountExplanation,
} from './graph/store.js';
// …moved to another driver in place
export { migrateStore, abortMigration } from './graph/migrate.js';
export type { MigrateOptions, MigrateProgress, MigrateResult } from './graph/migrate.js';

// Images: docker save / OCI archives in and out, image records beside the layers
export {
  loadImages,
  saveImages,
  commitLayer,
  listImages,
  getImage,
  removeImage,
  resolveLayerRef,
  tagImage,
  untagImage,
  inspect,
  imageHistory,
  prune,
  MEDIA,
} from './image/index.js';
// …from and to registries (the OCI distribution API)
export { pullImage, pushImage, parseReference, parsePlatform } from './image/index.js';
export type { PullOptions, PullProgress, PulledImage, PushOptions, PushProgress, PushedImage, ImageReference } from './image/index.js';
// …and as a read-only containers/storage image store for podman, buildah and CRI-O
export { exportStorage, removeExport, listExports } from './image/index.js';
export type { ExportSummary, ExportOptions } from './image/index.js';
export type {
  LoadOptions,
  LoadProgress,
  LoadedImage,
  SaveOptions,
  SaveFormat,
  SavedImage,
  CommitOptions,
  CommittedImage,
  ImageSummary,
  RemoveImageResult,
  ImageRecord,
  ImageLayerRef,
  LayerCompression,
} from './image/index.js';
export { TarSplitRecorder, rebuildTarStream, readTarSplit } from './archive/tar-split.js';
export type { TarSplitRecord, TarSplitItem } from './archive/tar-split.js';

// containerd: the snapshots model and its gRPC server (`unionctl serve`)
export { SnapshotService, SNAPSHOT_REF_LABEL } from './serve/containerd/snapshots.js';
export type { SnapshotInfo, SnapshotKind } from './serve/containerd/snapshots.js';
export { serveSnapshotter } from './serve/containerd/server.js';
export type { SnapshotterServer, ServeOptions } from './serve/containerd/server.js';

// Errors
export { UnionctlError, SysCallError, UnsafeEntryError, TarFormatError, isUnionctlError, assertValidId } from './errors.js';
export type { ErrorCode } from './errors.js';

// Drivers: the interface, the registry, the built-in ones, the shared naive diff
export type {
  Driver,
  DriverInit,
  DriverCapabilities,
  WhiteoutFormat,
  Branch,
  BranchMode,
  Change,
  ChangeKind,
  ApplyResult,
  CreateOpts,
  GetOpts,
  MountSpec,
  MountPlan,
  MountDecision,
  PutOpts,
  RemoveOpts,
  References,
  CheckFinding,
  CheckedLayer,
  DriverCheckContext,
  RepairTx,
  RepairWhen,
} from './graph/driver.js';
export { GraphDriver } from './graph/graph-driver.js';
export { checkStore } from './graph/check.js';
export type { CheckOptions, CheckReport, ReportedFinding } from './graph/check.js';
export { MountLifecycle } from './graph/mounts.js';
export type { Mounter } from './graph/mounts.js';
export {
  registerDriver,
  driverNames,
  lookupDriver,
  selectDriver,
  parseStorageOpts,
  splitStorageOpts,
  storageOptsFor,
} from './graph/registry.js';
export type { DriverEntry } from './graph/registry.js';
export { builtinDrivers, registerBuiltinDrivers } from './drivers/index.js';
export { VfsDriver, vfsEntry } from './drivers/vfs/index.js';
export { Overlay2Driver, overlay2Entry } from './drivers/overlay2/index.js';
export { NaiveDiff } from './graph/naive-diff.js';

// Archive: tar in, tar out, change detection
export type { TarHeader, TarEntryType, Timespec, InodeMetadata, LeasedChunk } from './archive/types.js';
export { readTar } from './archive/tar-reader.js';
export type { TarReader, TarEntry, TarStreamDigest, ReadTarOptions, TarTap } from './archive/tar-reader.js';
export { TarWriter } from './archive/tar-writer.js';
export { sniffCompression, decompressedStream, openLayerInput } from './archive/decompress.js';
export type { Compression } from './archive/decompress.js';
export { applyLayer } from './archive/apply.js';
export { WHITEOUT_PREFIX, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE } from './archive/whiteout.js';
export type { ApplyLayerOptions } from './archive/apply.js';
export { exportChanges, exportLayerDir, changesFromLayerDir } from './archive/export.js';
export type { ExportChangesOptions } from './archive/export.js';
export { changesBetween } from './archive/changes.js';
export { changesSize, directorySize } from './archive/size.js';
export { copyTree } from './archive/copytree.js';
export type { CopyTreeOptions, CopyMode } from './archive/copytree.js';

// sys: the mount table and kernel feature probes
export { readMountInfo, parseMountInfo, findMount, isMountPoint, mountsUnder, parseOverlayOptions } from './sys/mountinfo.js';
export type { MountInfo, OverlayOptions } from './sys/mountinfo.js';
export {
  hasFilesystem,
  overlaySupported,
  overlayModuleParams,
  supportsDType,
  newMountApiSupported,
  overlayLowerdirPlusSupported,
  overlayMaxLowerLayers,
  backingFs,
  reflinkSupported,
  projectQuotaSupported,
  inUserNamespace,
} from './sys/probes.js';
export type { OverlayParams } from './sys/probes.js';
