/** The replicated file index: its records, the commands that change it, and their results. */
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

/** A change to one path. */
export type FileOp = PutFile | Mkdir | Delete | Rename;

/** A change to cluster metadata: applied without compare-and-swap. */
export type MetaOp = SetPeerAddrs | UseInvite;

/** Anything a command may carry. */
export type Op = FileOp | MetaOp;

/** A command as proposed through Raft: the ops are applied all or none. */
export interface Command {
  /** Proposing node's id. */
  origin: string;
  ops: Op[];
}

/** Why a command was not applied. */
export type RejectCode =
  | "conflict" // a base version did not match (someone else committed first)
  | "case-conflict" // a live path differs from this one only in case
  | "not-found" // the path to delete or rename is absent
  | "not-a-directory" // an ancestor is a file or symlink
  | "not-empty" // a directory still has live entries below it
  | "invite-used" // a single-use invite was used already
  | "invalid"; // the command itself is malformed

/** Outcome of applying one command. */
export type ApplyResult =
  | { ok: true; version: number }
  | { ok: false; code: RejectCode; path: string; message: string; current: number };
