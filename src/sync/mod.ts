/**
 * The sync engine's public face. So far: the scanner that keeps the local index in step with
 * the directory, file hashing, ignore rules and local snapshots.
 */
export {
  type PathsScanResult,
  type ScanOptions,
  scanPaths,
  type ScanProgress,
  type ScanResult,
  scanTree,
} from "./scanner.ts";
export { type HashedFile, hashFile, HashFileError } from "./hash_file.ts";
export { IGNORE_FILE_NAME, IgnoreRules } from "./ignore_rules.ts";
export { type WalkEntry, walkPaths, type WalkProblem, walkTree } from "./walk.ts";
export { createSnapshot, diffSnapshots } from "./snapshot_ops.ts";
export { ChannelRaftTransport } from "./raft_transport.ts";
export { inviteSecret, inviteTerms, makeInvite, newInviteId, resolveInvite } from "./invites.ts";
export { type LogFormat, Logger, type LogLevel, parseLogLevel } from "./log.ts";
export {
  callControl,
  type ControlServer,
  ControlTimeoutError,
  NotRunningError,
  startControlServer,
  type SyncNowResult,
} from "./control.ts";
export {
  parseSyncedRecord,
  SYNCED_PREFIX,
  syncedAfterUpload,
  syncedFromIndex,
  syncedFromLocal,
  syncedKey,
  type SyncedRecord,
  SyncedState,
} from "./synced_state.ts";
export { compareWithStore, PlanViews, type ViewDifference, type Views } from "./plan_views.ts";
export {
  type Conflict,
  reconcile,
  type RefusedPath,
  sameContent,
  type SyncPlan,
} from "./reconcile.ts";
export {
  conflictCopyName,
  ConflictNameError,
  conflictTimestamp,
  MAX_CONFLICT_ATTEMPTS,
  sanitizeNodeName,
  splitExtension,
  uniqueConflictCopyName,
} from "./conflict_names.ts";
export {
  checkAncestors,
  ChunkFetchError,
  isTempName,
  keepConflictCopy,
  materialize,
  MaterializeError,
  type MaterializeOptions,
  type MaterializeResult,
  type MaterializeSources,
  type MaterializeStatus,
  sweepTempFiles,
  TEMP_PREFIX,
  tempName,
  UnsafePathError,
  WriteGroup,
} from "./materializer.ts";
export {
  isPrefetchable,
  PrefetchedObjects,
  prefetchObjects,
  type PrefetchShare,
} from "./prefetch.ts";
export {
  PartialChunks,
  type Stripe,
  STRIPE_BLOCK_CHUNKS,
  stripeBlockChunks,
  stripeFor,
  stripeOf,
  stripeOfHash,
} from "./partial_chunks.ts";
export { type ExpectedEntry, type WatchBatch, Watcher, type WatcherOptions } from "./watcher.ts";
export { ensureObjects, type FetchObjects, planRestore } from "./restore.ts";
export { objectsOfOps } from "./replicate.ts";
export { ClientGateway, type GatewayDeps, resolveVersion, VersionError } from "./gateway.ts";
export {
  type EngineDeps,
  type EngineOptions,
  type PassResult,
  type RemoteObjects,
  spreadOverDirectories,
  SyncEngine,
} from "./engine.ts";
export {
  type CommittedEntry,
  KindChangeError,
  planTreeChanges,
  type TreePlan,
  type WantedEntry,
} from "./tree_plan.ts";
export { type BatchSteps, writeBatches } from "./batch_writer.ts";
