/**
 * Bodies of the session calls between a one-shot client (`filesync push`/`pull`) and the
 * member serving it (its gateway), CBOR through src/wire. Both sides use these functions;
 * decoders are strict because a body may come from an untrusted peer.
 *
 *   tree    [prefix, at, offset, limit]  ->  [version, total, records]
 *           One consistent committed version of the live entries under `prefix`, a page at a
 *           time: the first call names `at` ("" = the latest, a version number, a snapshot
 *           label or a time) and the answer says which version that is; later pages pass that
 *           version number, so every page comes from the same version.
 *   commit  [budgetMs, encoded Command]      ->  [version]
 *           The gateway makes the objects the ops need durable on a majority, then proposes
 *           the command as one Raft entry: every op applies, or none. It gives up (no-quorum)
 *           rather than propose once `budgetMs` has passed, so a batch whose objects were not
 *           durable in time never commits later. A proposal made whose outcome Raft cannot tell
 *           (timeout, leader change) is answered "unknown-outcome": the client re-reads.
 *           The command is the batch itself, or, for a batch too large for one Raft entry,
 *           one `commit-batch` op naming parts staged before.
 *   stage   an encoded Command of one `stage` op ->  [version]
 *           One part of a large batch, kept in the index until its `commit-batch` applies
 *           every part as one command (or a prune drops it, abandoned).
 */
import { HASH_LENGTH } from "../chunk/mod.ts";
import type { FileKind, IndexRecord } from "../fsm/mod.ts";
import { cborDecode, cborEncode } from "../wire/mod.ts";

/** Method names of the session calls. */
export const TREE_METHOD = "tree";
export const COMMIT_METHOD = "commit";
export const STAGE_METHOD = "stage";

/** Records per tree page (keeps each answer far below the session body limit). */
export const TREE_PAGE = 10_000;

const KINDS: readonly FileKind[] = ["file", "dir", "symlink"];

/** A malformed call or answer body. */
export class BodyDecodeError extends Error {
  override name = "BodyDecodeError";
}

/** One live entry of the tree as a client sees it. */
export type TreeEntry = Pick<
  IndexRecord,
  "path" | "version" | "kind" | "root" | "size" | "mode" | "mtime" | "target"
>;

/** A tree request. */
export interface TreeRequest {
  prefix: string;
  at: string;
  offset: number;
  limit: number;
}

/** A page of a tree. */
export interface TreePage {
  version: number;
  total: number;
  records: TreeEntry[];
}

function decode(bytes: Uint8Array, what: string): unknown[] {
  let v: unknown;
  try {
    v = cborDecode(bytes);
  } catch (e) {
    throw new BodyDecodeError(`${what}: not valid CBOR: ${(e as Error).message}`);
  }
  if (!Array.isArray(v)) throw new BodyDecodeError(`${what}: not an array`);
  return v;
}

function str(v: unknown, what: string, max = 4096): string {
  if (typeof v !== "string" || v.length > max) throw new BodyDecodeError(`${what} must be text`);
  return v;
}

function uint(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new BodyDecodeError(`${what} must be a non-negative integer`);
  }
  return v;
}

function int(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v)) {
    throw new BodyDecodeError(`${what} must be an integer`);
  }
  return v;
}

export function encodeTreeRequest(r: TreeRequest): Uint8Array {
  return cborEncode([r.prefix, r.at, r.offset, r.limit]);
}

export function decodeTreeRequest(bytes: Uint8Array): TreeRequest {
  const a = decode(bytes, "tree request");
  if (a.length !== 4) throw new BodyDecodeError("tree request must have 4 fields");
  return {
    prefix: str(a[0], "prefix"),
    at: str(a[1], "at", 256),
    offset: uint(a[2], "offset"),
    limit: Math.min(TREE_PAGE, uint(a[3], "limit")),
  };
}

export function encodeTreePage(p: TreePage): Uint8Array {
  return cborEncode([
    p.version,
    p.total,
    p.records.map((r) => [
      r.path,
      r.version,
      KINDS.indexOf(r.kind),
      r.root,
      r.size,
      r.mode,
      r.mtime,
      r.target ?? "",
    ]),
  ]);
}

export function decodeTreePage(bytes: Uint8Array): TreePage {
  const a = decode(bytes, "tree page");
  if (a.length !== 3 || !Array.isArray(a[2])) throw new BodyDecodeError("malformed tree page");
  const records = a[2].map((raw, i): TreeEntry => {
    const what = `records[${i}]`;
    if (!Array.isArray(raw) || raw.length !== 8) throw new BodyDecodeError(`${what} malformed`);
    const kind = KINDS[uint(raw[2], `${what}.kind`)];
    if (!kind) throw new BodyDecodeError(`${what}.kind is unknown`);
    const root = raw[3];
    if (!(root instanceof Uint8Array) || root.length !== HASH_LENGTH) {
      throw new BodyDecodeError(`${what}.root must be ${HASH_LENGTH} bytes`);
    }
    const target = str(raw[7], `${what}.target`);
    return {
      path: str(raw[0], `${what}.path`),
      version: uint(raw[1], `${what}.version`),
      kind,
      root: new Uint8Array(root),
      size: uint(raw[4], `${what}.size`),
      mode: uint(raw[5], `${what}.mode`) & 0o7777,
      mtime: int(raw[6], `${what}.mtime`),
      ...(kind === "symlink" ? { target } : {}),
    };
  });
  return { version: uint(a[0], "version"), total: uint(a[1], "total"), records };
}

/** A commit call: the client's remaining time, and the encoded command. */
export interface CommitRequest {
  budgetMs: number;
  command: Uint8Array;
}

export function encodeCommitRequest(r: CommitRequest): Uint8Array {
  return cborEncode([r.budgetMs, r.command]);
}

export function decodeCommitRequest(bytes: Uint8Array): CommitRequest {
  const a = decode(bytes, "commit request");
  if (a.length !== 2 || !(a[1] instanceof Uint8Array)) {
    throw new BodyDecodeError("commit request must be [budgetMs, command]");
  }
  return { budgetMs: uint(a[0], "budgetMs"), command: a[1] };
}

export function encodeCommitResult(version: number): Uint8Array {
  return cborEncode([version]);
}

export function decodeCommitResult(bytes: Uint8Array): number {
  const a = decode(bytes, "commit result");
  return uint(a[0], "version");
}
