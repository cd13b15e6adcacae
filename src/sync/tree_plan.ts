/**
 * The file index ops that make the committed tree under a prefix equal to a wanted one, given
 * the committed tree as one version: what `filesync push` proposes for a local folder, and what
 * `restore` proposes to bring an old version back. Pure: no I/O, so every rule is unit-tested.
 *
 * Rules (rsync-like):
 * - a file or symlink is put when it is absent, or differs in content (root), target or mode;
 *   a file with the same content and mode is left alone whatever its mtime, so planning an
 *   identical tree proposes nothing and moves no chunk;
 * - a directory is created when absent (empty directories too);
 * - with `deleteExtra`, entries under the prefix that the wanted tree lacks are deleted;
 * - an entry whose kind differs (a directory in the cluster, a file wanted) is replaced only
 *   with `deleteExtra`; without it planning fails with KindChangeError before any op;
 * - ops are ordered deletes (deepest first), then directories (parents first), then puts: the
 *   index applies them in order, all or none.
 */
import { type Hash, hashEquals } from "../chunk/mod.ts";
import { EMPTY_FILE_ROOT } from "../merkle/mod.ts";
import type { FileOp, IndexRecord } from "../fsm/mod.ts";
import type { WalkEntry } from "./walk.ts";

/** One entry of the wanted tree (paths relative to the prefix); files carry their root. */
export interface WantedEntry extends WalkEntry {
  root?: Hash;
}

/** One live committed entry (full path). */
export type CommittedEntry = Pick<
  IndexRecord,
  "path" | "version" | "kind" | "root" | "size" | "mode" | "mtime" | "target"
>;

/** An entry would change kind, which needs `deleteExtra`. */
export class KindChangeError extends Error {
  override name = "KindChangeError";
  constructor(readonly path: string, message: string) {
    super(message);
  }
}

/** The ops of a plan, and what they carry. */
export interface TreePlan {
  ops: FileOp[];
  /** Relative paths of the files put (their objects must be made available). */
  putFiles: string[];
  bytes: number;
  counts: { put: number; mkdir: number; delete: number };
}

function depth(path: string): number {
  let n = 0;
  for (let i = 0; i < path.length; i++) if (path.charCodeAt(i) === 47) n++;
  return n;
}

/** Plan the ops that make `remote` (live entries at and under `prefix`) equal to `local`. */
export function planTreeChanges(
  local: readonly WantedEntry[],
  remote: readonly CommittedEntry[],
  prefix: string,
  deleteExtra: boolean,
): TreePlan {
  const full = (rel: string) => (prefix === "" ? rel : `${prefix}/${rel}`);
  const remoteByPath = new Map(remote.map((r) => [r.path, r]));
  const wanted = new Map<string, WantedEntry>();
  for (const e of local) wanted.set(full(e.path), e);
  const deletes = new Set<string>();
  const replaced = new Set<string>();
  const deleteSubtree = (root: string) => {
    for (const r of remote) {
      if (r.path === root || r.path.startsWith(`${root}/`)) deletes.add(r.path);
    }
  };
  if (prefix !== "") {
    const r = remoteByPath.get(prefix);
    if (r && r.kind !== "dir") {
      if (!deleteExtra) {
        throw new KindChangeError(
          prefix,
          `${prefix} is a ${r.kind} in the cluster; pass --delete to replace it with the folder`,
        );
      }
      deletes.add(prefix);
      replaced.add(prefix);
    }
  }
  for (const [path, e] of wanted) {
    const r = remoteByPath.get(path);
    if (!r || r.kind === e.kind) continue;
    if (!deleteExtra) {
      throw new KindChangeError(
        path,
        `${path} is a ${r.kind} in the cluster and a ${e.kind} here; pass --delete to replace it`,
      );
    }
    deleteSubtree(path);
    replaced.add(path);
  }
  if (deleteExtra) {
    for (const r of remote) if (r.path !== prefix && !wanted.has(r.path)) deletes.add(r.path);
  }
  const ops: FileOp[] = [];
  const counts = { put: 0, mkdir: 0, delete: 0 };
  for (const path of [...deletes].sort((a, b) => depth(b) - depth(a) || (a < b ? 1 : -1))) {
    ops.push({ op: "delete", path, base: remoteByPath.get(path)!.version });
    counts.delete++;
  }
  const baseOf = (path: string) =>
    replaced.has(path) || deletes.has(path) ? 0 : remoteByPath.get(path)?.version ?? 0;
  if (prefix !== "" && (!remoteByPath.has(prefix) || replaced.has(prefix))) {
    ops.push({ op: "mkdir", path: prefix, base: 0, mode: 0o755, mtime: Date.now() });
    counts.mkdir++;
  }
  const entries = [...wanted].sort(([a], [b]) => depth(a) - depth(b) || (a < b ? -1 : 1));
  for (const [path, e] of entries) {
    if (e.kind !== "dir") continue;
    const r = remoteByPath.get(path);
    if (r && !replaced.has(path)) continue;
    ops.push({ op: "mkdir", path, base: baseOf(path), mode: e.mode, mtime: e.mtime });
    counts.mkdir++;
  }
  const putFiles: string[] = [];
  let bytes = 0;
  for (const [path, e] of entries) {
    if (e.kind === "dir") continue;
    const r = replaced.has(path) ? undefined : remoteByPath.get(path);
    // A symlink's mode is not synced (as in the sync engine).
    if (r && e.kind === "file" && r.mode === e.mode && hashEquals(r.root, e.root!)) continue;
    if (r && e.kind === "symlink" && r.target === e.target) continue;
    if (e.kind === "file") {
      ops.push({
        op: "put",
        path,
        base: baseOf(path),
        kind: "file",
        root: e.root!,
        size: e.size,
        mode: e.mode,
        mtime: e.mtime,
      });
      putFiles.push(e.path);
      bytes += e.size;
    } else {
      ops.push({
        op: "put",
        path,
        base: baseOf(path),
        kind: "symlink",
        root: EMPTY_FILE_ROOT,
        size: new TextEncoder().encode(e.target ?? "").length,
        mode: e.mode,
        mtime: e.mtime,
        target: e.target,
      });
    }
    counts.put++;
  }
  return { ops, putFiles, bytes, counts };
}
