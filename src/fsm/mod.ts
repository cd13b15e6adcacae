/**
 * The replicated state machine: the cluster's file index (path -> version, kind, root, size,
 * mode, mtime, tombstone) and the compare-and-swap commands that change it.
 */
export type {
  ApplyResult,
  Command,
  Delete,
  FileKind,
  FileOp,
  IndexRecord,
  MetaOp,
  Mkdir,
  Op,
  PutFile,
  RejectCode,
  Rename,
  SetPeerAddrs,
  UseInvite,
} from "./types.ts";
export {
  CommandDecodeError,
  decodeCommand,
  decodeSnapshot,
  encodeCommand,
  encodeSnapshot,
  type IndexSnapshot,
  MAX_COMMAND_BYTES,
} from "./codec.ts";
export { IndexState, MAX_OPS_PER_COMMAND } from "./index_state.ts";
export {
  ancestors,
  caseFold,
  indexPathProblem,
  MAX_NAME_BYTES,
  PathError,
  validatePath,
} from "./paths.ts";
