/**
 * The replicated state machine: the cluster's file index (path -> version, kind, root, size,
 * mode, mtime, tombstone) and the compare-and-swap commands that change it. It keeps every
 * version as history (MVCC) so it can be read consistently as of any retained log index, named
 * labels pin cluster-wide snapshots, prunes bound the history, and one command may carry a
 * large batch that still applies atomically; a batch larger than one command is staged in
 * parts and committed by one `commit-batch` entry, still all or none.
 */
export type {
  ApplyResult,
  BatchOp,
  Command,
  CommitBatch,
  Delete,
  FileKind,
  FileOp,
  IndexRecord,
  Label,
  MetaOp,
  Mkdir,
  Op,
  Prune,
  PutFile,
  RejectCode,
  Rename,
  SetPeerAddrs,
  Stage,
  Unlabel,
  UseInvite,
} from "./types.ts";
export {
  CommandDecodeError,
  decodeCommand,
  decodeFileOps,
  decodeSnapshot,
  encodeCommand,
  encodeFileOps,
  encodeSnapshot,
  type IndexSnapshot,
  isBatchId,
  labelNameProblem,
  MAX_BATCH_PARTS,
  MAX_COMMAND_BYTES,
  MAX_LABEL_CHARS,
  MAX_STAGE_OPS,
  MAX_STAGE_PART,
} from "./codec.ts";
export {
  type IndexLabel,
  IndexState,
  type IndexStateOptions,
  MAX_BATCH_OPS,
  MAX_OPS_PER_COMMAND,
  STAGE_ABANDON_MS,
  syncedMode,
} from "./index_state.ts";
export { type CommitLimits, KV_LIMITS } from "./kv_batch.ts";
export {
  ancestors,
  caseFold,
  indexPathProblem,
  MAX_NAME_BYTES,
  PathError,
  validatePath,
} from "./paths.ts";
