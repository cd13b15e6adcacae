/**
 * Data types shared by the Raft core, its storage, its wire codec and its driver.
 *
 * Messages are one flat record (as in etcd-io/raft's raftpb.Message) rather than a union per
 * type: every field always exists with a neutral default, which keeps the codec's validation
 * strict and simple and lets the core read fields without narrowing on every access.
 */

/** A member's id. Opaque strings: libp2p peer ids in production, short names in tests. */
export type NodeId = string;

/** The kind of a log entry. */
export const EntryType = {
  /** Application data (or the empty entry a new leader appends to commit its term). */
  Normal: 0,
  /** A membership change; its data is an encoded {@link ConfChange}. */
  ConfChange: 1,
} as const;
export type EntryType = typeof EntryType[keyof typeof EntryType];

/** One entry of the replicated log. */
export interface Entry {
  readonly index: number;
  readonly term: number;
  readonly type: EntryType;
  readonly data: Uint8Array;
}

/** State that must be durable before any message that depends on it leaves the node. */
export interface HardState {
  readonly term: number;
  /** Whom this node voted for in `term`, or "" for nobody. */
  readonly vote: NodeId;
  readonly commit: number;
}

/** Cluster membership: voters decide elections and commits, learners only receive the log. */
export interface MembershipConfig {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
}

/**
 * A membership change. Only one voter is added or removed per change (see core.ts for why),
 * so `init` is only ever used for the very first entry written by {@link bootstrapState}.
 */
export type ConfChange =
  | { readonly type: "init"; readonly voters: readonly NodeId[] }
  | { readonly type: "addLearner"; readonly node: NodeId }
  | { readonly type: "promote"; readonly node: NodeId }
  | { readonly type: "remove"; readonly node: NodeId };

/** What a state-machine snapshot stands for. */
export interface SnapshotMeta {
  /** Last log index the snapshot includes. */
  readonly index: number;
  /** Term of the entry at `index`. */
  readonly term: number;
  /** Membership as of `index`. */
  readonly config: MembershipConfig;
}

/** A state-machine snapshot: its metadata and the opaque bytes produced by the state machine. */
export interface Snapshot {
  readonly meta: SnapshotMeta;
  readonly data: Uint8Array;
}

/** Message kinds on the wire. */
export const MessageType = {
  /** Leader → follower: entries after (index, logTerm), and the leader's commit. */
  App: 1,
  /** Follower → leader: accepted up to `index`, or rejected with a hint. */
  AppResp: 2,
  Vote: 3,
  VoteResp: 4,
  PreVote: 5,
  PreVoteResp: 6,
  /** Leader → follower: keep-alive; `index` carries the ReadIndex round being confirmed. */
  Heartbeat: 7,
  HeartbeatResp: 8,
  /** Leader → follower: one piece of a snapshot. */
  Snap: 9,
  /** Follower → leader: how many bytes of the snapshot in `index` it holds (`rejectHint`). */
  SnapResp: 10,
  /** Follower → leader: forwarded proposal (entries with index/term 0). */
  Prop: 11,
  /** Follower → leader: forwarded ReadIndex request carrying `context`. */
  ReadIndex: 12,
  /** Leader → follower: read index for `context`. */
  ReadIndexResp: 13,
  /** Follower → leader: please hand leadership to `from`. */
  TransferLeader: 14,
  /** Leader → transferee: campaign now, skipping pre-vote and the leader lease. */
  TimeoutNow: 15,
} as const;
export type MessageType = typeof MessageType[keyof typeof MessageType];

/** One piece of a snapshot in flight. */
export interface SnapshotPiece {
  readonly meta: SnapshotMeta;
  /** Total size of the snapshot's data in bytes. */
  readonly size: number;
  /** Byte offset of `data` within the snapshot. */
  readonly offset: number;
  readonly data: Uint8Array;
}

/** A Raft message. Fields a type does not use hold their neutral value (0, false, null, []). */
export interface Message {
  readonly type: MessageType;
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
  readonly logTerm: number;
  readonly index: number;
  readonly commit: number;
  readonly entries: readonly Entry[];
  readonly reject: boolean;
  readonly rejectHint: number;
  readonly context: Uint8Array | null;
  readonly snapshot: SnapshotPiece | null;
}

/** Result of a ReadIndex request: once `index` is applied locally, a read is linearizable. */
export interface ReadState {
  readonly index: number;
  readonly context: Uint8Array;
}

/** Follower, candidate, pre-candidate or leader. */
export const RaftRole = {
  Follower: "follower",
  PreCandidate: "pre-candidate",
  Candidate: "candidate",
  Leader: "leader",
} as const;
export type RaftRole = typeof RaftRole[keyof typeof RaftRole];

/**
 * Everything the core wants done, in order: persist (`hardState`, `snapshot`, `entries`), then
 * send `messages`, then apply (`snapshot` first, then `committed`). Then call `advance()`.
 */
export interface Ready {
  /** Set when term, vote or commit changed since the last ready. */
  readonly hardState: HardState | null;
  /** A snapshot received from the leader to persist and restore into the state machine. */
  readonly snapshot: Snapshot | null;
  /**
   * Entries to persist. They form one contiguous run; any stored entry at or after
   * `entries[0].index` is superseded and must be dropped.
   */
  readonly entries: readonly Entry[];
  readonly messages: readonly Message[];
  /** Committed entries to apply, in log order. */
  readonly committed: readonly Entry[];
  readonly readStates: readonly ReadState[];
}

/** What a node needs from durable storage to start (or restart). */
export interface PersistedState {
  readonly hardState: HardState;
  /** Latest state-machine snapshot, or null if none was ever taken. */
  readonly snapshot: Snapshot | null;
  /**
   * The log is kept from `offset + 1`: `offset` is the last compacted index, `offsetTerm` its
   * term and `offsetConfig` the membership as of it.
   */
  readonly offset: number;
  readonly offsetTerm: number;
  readonly offsetConfig: MembershipConfig;
  readonly entries: readonly Entry[];
}

/** Error raised for a request the core cannot serve (no leader, not leader, bad change…). */
export class RaftError extends Error {
  constructor(readonly code: RaftErrorCode, message: string) {
    super(message);
    this.name = "RaftError";
  }
}

export type RaftErrorCode =
  | "ProposalDropped"
  | "NotLeader"
  | "ConfChangeRejected"
  | "TransferRejected"
  | "InvalidState"
  | "Timeout"
  /** The leader changed while a request was in flight: its outcome is unknown. */
  | "LeaderLost"
  | "Stopped"
  | "Decode";

export const EMPTY_CONFIG: MembershipConfig = Object.freeze({
  voters: Object.freeze([]) as readonly NodeId[],
  learners: Object.freeze([]) as readonly NodeId[],
});

/** A message with every field at its neutral value, to spread defaults into. */
export function message(
  fields: Partial<Message> & Pick<Message, "type" | "from" | "to" | "term">,
): Message {
  return {
    logTerm: 0,
    index: 0,
    commit: 0,
    entries: [],
    reject: false,
    rejectHint: 0,
    context: null,
    snapshot: null,
    ...fields,
  };
}
