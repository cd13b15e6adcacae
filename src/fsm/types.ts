/**
 * The replicated file index: its records, the commands that change it, and their results.
 * Every record version is kept as history (until a prune drops it), so the index can be read
 * as of any retained log index, and named labels pin cluster-wide snapshots of it. A batch too
 * large for one Raft entry is staged part by part and committed by one entry, still atomically.
 */
import type { Hash } from "../chunk/mod.ts";

/** What a path names. */
export type FileKind = "file" | "dir" | "symlink";

/**
 * One path of the committed index. `version` is the Raft log index of the entry that last
 * changed it; a deleted path keeps a tombstone so a node that was away can tell "deleted
 * remotely" from "created locally".
 */
export interface IndexRecord {
  path: string;
  version: number;
  kind: FileKind;
  /** File tree root (files); EMPTY_FILE_ROOT for dirs and symlinks. */
  root: Hash;
  size: number;
  mode: number;
  mtime: number;
  target?: string;
  deleted: boolean;
  /** Node that proposed the change (for conflict copies and logs). */
  origin: string;
  /**
   * Commit time (unix ms on the proposer's clock) of the command that wrote this version; 0
   * when it carried none. Always set on records the index returns.
   */
  committedAt?: number;
}

/** Content of a file or symlink as a PutFile carries it. */
export interface PutFile {
  op: "put";
  path: string;
  /** Version the proposer based its change on; 0 = the path must be absent or deleted. */
  base: number;
  kind: "file" | "symlink";
  root: Hash;
  size: number;
  mode: number;
  mtime: number;
  target?: string;
}

export interface Mkdir {
  op: "mkdir";
  path: string;
  base: number;
  mode: number;
  mtime: number;
}

export interface Delete {
  op: "delete";
  path: string;
  base: number;
}

/** Move one entry (a file, a symlink or an empty directory); moves no data. */
export interface Rename {
  op: "rename";
  from: string;
  fromBase: number;
  to: string;
  /** 0 = `to` must be absent or deleted; otherwise the version it replaces. */
  toBase: number;
}

/** Record where a member can be reached (the cluster's replicated address book). */
export interface SetPeerAddrs {
  op: "peer";
  peerId: string;
  addrs: string[];
}

/** Mark a single-use invite as consumed, so no other member admits with it again. */
export interface UseInvite {
  op: "use-invite";
  inviteId: string;
}

/**
 * Name the index state as of `version` (a cluster-wide snapshot that prunes keep). `version`
 * 0 means "just before this entry" (its index - 1); otherwise it must be below the entry's
 * index. A name is used once: a second label with it is rejected ("label-exists").
 */
export interface Label {
  op: "label";
  /** 1..128 characters, no control characters. */
  name: string;
  version: number;
}

/** Remove a label (a no-op when there is none, so a re-delivered entry is harmless). */
export interface Unlabel {
  op: "unlabel";
  name: string;
}

/**
 * Drop old history. Kept: each path's head, its newest `keepVersions` versions (head
 * included), versions committed within `keepMs` of `now`, and the version each label needs.
 * All inputs travel in the op, so every node drops the same versions. Must be a command's only op.
 */
export interface Prune {
  op: "prune";
  keepVersions: number;
  keepMs: number;
  /** Proposer's clock (unix ms) that the `keepMs` window is measured back from. */
  now: number;
}

/** A change to one path. */
export type FileOp = PutFile | Mkdir | Delete | Rename;

/**
 * One part of a batch too large for one command: its file ops are kept aside (invisible to
 * readers, applied nowhere) until a CommitBatch names the batch. Staging a part again
 * replaces it. Must be a command's only op.
 */
export interface Stage {
  op: "stage";
  /** Chosen by the proposer: 8..64 characters of [0-9a-z-]. */
  batch: string;
  /** 0..99,999. */
  part: number;
  /** 1..50,000 file ops. */
  ops: FileOp[];
}

/**
 * Apply parts 0..parts-1 of a staged batch, in order, as one command from this command's
 * origin: all or none, every touched path at this entry's index. The batch is then done
 * (whether it applied or was refused) and cannot be staged or committed again. Must be a
 * command's only op.
 */
export interface CommitBatch {
  op: "commit-batch";
  batch: string;
  /** 1..100,000. */
  parts: number;
}

/** A change to cluster metadata: applied without compare-and-swap. */
export type MetaOp = SetPeerAddrs | UseInvite | Label | Unlabel | Prune;

/** The two steps of a staged batch. */
export type BatchOp = Stage | CommitBatch;

/** Anything a command may carry. */
export type Op = FileOp | MetaOp | BatchOp;

/** A command as proposed through Raft: the ops are applied all or none. */
export interface Command {
  /** Proposing node's id. */
  origin: string;
  ops: Op[];
  /**
   * Commit time, unix ms on the proposer's clock, recorded with every version the command
   * writes (for "as of" reads by time). Absent/0 = unknown (commands from older nodes).
   */
  time?: number;
}

/** Why a command was not applied. */
export type RejectCode =
  | "conflict" // a base version did not match (someone else committed first)
  | "case-conflict" // a live path differs from this one only in case
  | "not-found" // the path to delete or rename is absent
  | "not-a-directory" // an ancestor is a file or symlink
  | "not-empty" // a directory still has live entries below it
  | "invite-used" // a single-use invite was used already
  | "label-exists" // a label with this name exists already
  | "invalid"; // the command itself is malformed

/** Outcome of applying one command. */
export type ApplyResult =
  | {
    ok: true;
    version: number;
    /** Prune only: history versions dropped by this run (fewer if a crash re-delivered it). */
    pruned?: number;
    /** Prune only: staged batches removed (done, or abandoned for over a day). */
    batchesRemoved?: number;
  }
  | { ok: false; code: RejectCode; path: string; message: string; current: number };
