/**
 * The local store: content-addressed pack files, the chunk locator that points into the
 * synced tree itself, and the Deno KV schema for the file index and snapshots.
 */
export { CorruptObjectError, MissingObjectError, StaleLocationError } from "./errors.ts";
export { KV_MAX_VALUE_BYTES, KvBatch } from "./kv_batch.ts";
export { KeptObjects } from "./kept_objects.ts";
export {
  type CompactOptions,
  type CompactStats,
  type CompactStep,
  type DeadPredicate,
  DEFAULT_PACK_TARGET_BYTES,
  MAX_OBJECT_BYTES,
  type PackedContext,
  PackStore,
  type PackStoreOptions,
} from "./packs.ts";
export {
  collectGarbage,
  DEFAULT_GC_GRACE_MS,
  type GcOptions,
  type GcStats,
  HELD_BY_TREE,
  heldByTree,
  UNREFERENCED,
} from "./gc.ts";
export { HELD_CHECK_WINDOW_MS, HeldCheck, type PassState } from "./held_check.ts";
export { type LiveSet, liveSet } from "./liveness.ts";
export { Pins } from "./pins.ts";
export { ChunkLocator } from "./locator.ts";
export { FileIndex, type ScanSummary } from "./file_index.ts";
export { Snapshots, UnknownSnapshotError } from "./snapshots.ts";
export {
  DATA_DIR_NAME,
  directoryBytes,
  LocalStore,
  type LocalStoreOptions,
} from "./local_store.ts";
export {
  type ChunkLocation,
  type EntryKind,
  loadRecordsUnder,
  type LocalFileRecord,
  metaKey,
  type ObjectLocation,
  SchemaError,
  type SnapshotRecord,
} from "./schema.ts";
export { type ClusterInfo, loadCluster, newCluster, saveCluster } from "./cluster.ts";
