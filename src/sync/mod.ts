/**
 * The sync engine's public face. So far: the scanner that keeps the local index in step with
 * the directory, file hashing, ignore rules and local snapshots.
 */
export { type ScanOptions, type ScanProgress, type ScanResult, scanTree } from "./scanner.ts";
export { type HashedFile, hashFile, HashFileError } from "./hash_file.ts";
export { IGNORE_FILE_NAME, IgnoreRules } from "./ignore_rules.ts";
export { type WalkEntry, type WalkProblem, walkTree } from "./walk.ts";
export { createSnapshot, diffSnapshots } from "./snapshot_ops.ts";
export { ChannelRaftTransport } from "./raft_transport.ts";
export { inviteSecret, inviteTerms, makeInvite, newInviteId, resolveInvite } from "./invites.ts";
export { type LogFormat, Logger, type LogLevel, parseLogLevel } from "./log.ts";
export { callControl, type ControlServer, NotRunningError, startControlServer } from "./control.ts";
