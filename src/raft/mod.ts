/**
 * Raft: a pure consensus core (core.ts), its durable storage (storage.ts), a wire codec
 * (codec.ts) and the node that drives them with timers, a transport and a state machine
 * (node.ts). Other folders import only this file.
 */
export {
  bootstrapState,
  type Compaction,
  emptyState,
  RaftCore,
  type RaftOptions,
  type RaftStatus,
  type UnsafeOptions,
} from "./core.ts";
export {
  applyConfChange,
  decodeConfChange,
  encodeConfChange,
  isVoter,
  validateConfChange,
} from "./config.ts";
export { KvRaftStorage, MemoryStorage, type RaftStorage, type StorageUpdate } from "./storage.ts";
export {
  decodeMessage,
  decodeMessages,
  encodeMessage,
  encodeMessages,
  MAX_MESSAGE_BYTES,
} from "./codec.ts";
export {
  type ConfChange,
  type Entry,
  EntryType,
  type HardState,
  type MembershipConfig,
  type Message,
  MessageType,
  type NodeId,
  type PersistedState,
  RaftError,
  type RaftErrorCode,
  RaftRole,
  type ReadState,
  type Ready,
  type Snapshot,
  type SnapshotMeta,
  type SnapshotPiece,
} from "./types.ts";
export {
  InMemoryNetwork,
  RaftNode,
  type RaftNodeOptions,
  type StateMachine,
  type Transport,
  unwrapProposal,
  wrapProposal,
} from "./node.ts";
