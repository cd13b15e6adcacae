/**
 * Reconcile: the pure planning step of the sync loop. It compares, path by path, three views
 *
 *   L  local:     what the last scan saw on disk (the FileIndex),
 *   S  synced:    the committed version the disk content corresponded to when last in step,
 *   C  committed: the cluster's file index (tombstones included),
 *
 * and says what to do: ops to propose (`upload`), committed entries to write to disk
 * (`materialize`), paths where both sides changed (`conflicts`), and paths whose disk content
 * already equals the committed entry (`adopt`: only the synced state needs recording).
 *
 * No I/O, no clock, no randomness: the same inputs give the same plan, so it can be tested
 * exhaustively and replayed. The governing invariant is that NO CONTENT IS EVER DROPPED: local
 * content that was never committed either goes into `upload`, or into `conflicts` (the caller
 * keeps it as a conflict copy), or lies inside a directory that is itself a conflict (and so
 * moves with it); and a materialization never replaces local content that was not committed.
 *
 * Terms used by the rules below:
 * - content of an entry: its kind plus its root (files) or target (symlinks); directories have
 *   no content beyond their kind. Metadata: the mode (files and directories; a symlink's mode
 *   cannot be set portably and is ignored). mtime is neither: see rule M.
 * - local change: L differs from S in content (a "content change") or only in mode (a
 *   "metadata change"); a path with no S and some L is a new local entry (content change).
 * - remote change: C.version > S.version; with no S, any live C. A remote change is
 *   metadata-only when C's content equals S's.
 *
 * The rules (each is tagged in the code):
 * - E  Equal: L equals live C in content and mode: nothing to upload. If the remote changed,
 *      adopt (record synced state) — or, when only a file's mtime differs, materialize, which
 *      then just sets the mtime so the disk matches the committed entry exactly.
 * - M  mtime-only local changes of a file whose root is unchanged are not uploaded (editors and
 *      `touch` would otherwise cause churn on every node). Directory mtimes are ignored
 *      altogether: they change whenever an entry inside changes.
 * - U  Local change, no remote change: upload (put / mkdir) with base = S.version, 0 for a new
 *      path. A mode-only change uploads too.
 * - D  Local deletion (S present, L absent), no remote change: delete op, base S.version.
 * - DR A remote change beats a local deletion: materialize the committed entry (nothing is
 *      lost, the deleted content was committed earlier). If C is a tombstone too, both sides
 *      deleted: adopt.
 * - R  Remote change, no local change: materialize (write, or delete for a tombstone).
 * - RD Remote deletion with a local content change: keep the local content and upload it as
 *      new (base 0). A local metadata-only change does not resurrect a deleted path.
 * - MC Metadata loses to content: a remote metadata-only change with a local content change ->
 *      upload the local content over it (base C.version, local mode); a local metadata-only
 *      change with a remote change -> materialize. Between two directories, which differ
 *      only in mode, committed wins.
 * - X  Conflict: both sides changed content (or a new local entry meets a different live
 *      committed one). The local content is kept as a conflict copy by the caller, and the
 *      committed entry is then materialized at the path.
 * - T  Directories and their contents (structure rules):
 *      T1 a directory the plan would remove or replace on disk (remote deletion, or remote
 *         replacement by a file) that still holds local content to keep (an entry being
 *         uploaded, a conflict, anything not being deleted) is kept: remote deletion -> mkdir
 *         with base 0 (rule RD); replacement by a file or symlink -> conflict (rule X).
 *      T2 a local deletion of a directory is proposed only if every live committed entry
 *         below it is deleted by the same plan; otherwise (one of them was changed remotely,
 *         or is new) the directory is materialized again (rule DR).
 *      T3 a local file or symlink that replaced a committed directory is uploaded only if
 *         every live committed entry below is deleted by the plan; otherwise it is a
 *         conflict (rule X).
 *      T4 when a conflict is a local DIRECTORY, everything below it is left out of this plan:
 *         the caller moves the directory aside (conflict copy) and the next scan sees its
 *         contents under the new name.
 * - N  Rename: a path gone locally (rule D) whose content reappears at a new local path that
 *      would be uploaded (rule U or RD) with the same root, mode and mtime, as a non-empty
 *      regular file, becomes one rename op instead of delete + put: it moves no data and keeps
 *      the intent. Pairs are matched in path order, so the plan is deterministic.
 * - P  Paths the index refuses (validatePath) are never uploaded: they are reported in
 *      `refused` and otherwise left alone.
 *
 * Op order (upload): each op comes after the ops it depends on, as the state machine checks
 * them one by one: a create (mkdir, put, rename target) after the mkdir of its ancestors and
 * after the removal of any path differing from it only in case; the deletion of a directory,
 * or its replacement by a file, after the removal of everything below it. Otherwise mkdirs
 * come first (parents first), then renames, then deletes (children first), then puts, each in
 * path order. The only possible cycle involves a rename (a case-only rename of a directory
 * together with its contents); the renames on it are then given up for delete + put (deletes
 * and creates alone cannot form a cycle).
 *
 * Materialize order: tombstones first, children first (a directory is emptied before it is
 * removed or replaced by a file), then live entries, parents first.
 *
 * What the caller does with a plan: (1) for each conflict, move the local entry aside to a
 * conflict-copy name (conflictCopyName), then materialize the committed entry; (2) materialize
 * the entries in order, rescanning and reconciling again whenever the materializer answers
 * "local-changed"; (3) record synced state for `adopt` (SyncedState.adopt); (4) propose the
 * upload ops in order and, once committed, record synced state for them
 * (SyncedState.recordUpload). A rejected proposal (compare-and-swap lost) needs no special
 * case: a fresh reconcile against the newer committed index turns it into a conflict.
 */
import { hashEquals } from "../chunk/mod.ts";
import { caseFold, type FileOp, indexPathProblem, type IndexRecord } from "../fsm/mod.ts";
import { EMPTY_FILE_ROOT } from "../merkle/mod.ts";
import type { LocalFileRecord } from "../store/mod.ts";
import type { SyncedRecord } from "./synced_state.ts";

/** Both sides changed a path: keep `local` as a conflict copy, then materialize `committed`. */
export interface Conflict {
  path: string;
  local: LocalFileRecord;
  committed: IndexRecord;
}

/** A local path the index would refuse, with the reason (rule P). */
export interface RefusedPath {
  path: string;
  reason: string;
}

/** What reconcile() decided. */
export interface SyncPlan {
  /** Ops to propose, in an order the state machine accepts one after the other. */
  upload: FileOp[];
  /**
   * The same ops grouped in waves: every op depends only on ops of earlier waves, so the ops
   * of one wave may be split into commands and proposed in any order or concurrently, as long
   * as a wave is committed before the next one is proposed.
   */
  uploadWaves: FileOp[][];
  /**
   * For each op of uploadWaves that depends on others, those ops (all of earlier waves): an op
   * may be proposed as soon as they are committed, whatever else its wave's predecessors do.
   */
  uploadDeps: ReadonlyMap<FileOp, readonly FileOp[]>;
  /** Committed entries to write to disk, in order (see the module comment). */
  materialize: IndexRecord[];
  /** Paths changed on both sides, sorted by path. */
  conflicts: Conflict[];
  /** Paths whose disk content already equals the committed entry, sorted by path. */
  adopt: string[];
  /** Local paths the index refuses, sorted by path. */
  refused: RefusedPath[];
}

/** Something with content: local, synced and committed records all have these fields. */
interface Content {
  kind: "file" | "dir" | "symlink";
  root: Uint8Array;
  mode: number;
  mtime: number;
  target?: string;
}

/** Same kind and same root (files) or target (symlinks). */
export function sameContent(a: Content, b: Content): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === "file") return hashEquals(a.root, b.root);
  if (a.kind === "symlink") return a.target === b.target;
  return true;
}

/** Same mode, for entries of the same kind; a symlink's mode is not synced. */
function sameMeta(a: Content, b: Content): boolean {
  return a.kind === "symlink" || a.mode === b.mode;
}

type Decision =
  | { t: "none" }
  | { t: "adopt" }
  | { t: "materialize" }
  | { t: "conflict" }
  | { t: "put"; base: number }
  | { t: "delete"; base: number };

const NONE: Decision = { t: "none" };
const ADOPT: Decision = { t: "adopt" };
const MATERIALIZE: Decision = { t: "materialize" };
const CONFLICT: Decision = { t: "conflict" };

/** The decision for one path from its three views alone (the per-path rules). */
function decide(
  L: LocalFileRecord | undefined,
  S: SyncedRecord | undefined,
  C: IndexRecord | undefined,
): Decision {
  const live = C !== undefined && !C.deleted;
  // With no synced record, a tombstone tells nothing this node could lose or need.
  const remote = C !== undefined && (S ? C.version > S.version : live);
  if (!remote) {
    if (L) {
      if (!S) return { t: "put", base: 0 }; // U: new local entry
      if (!sameContent(L, S) || !sameMeta(L, S)) return { t: "put", base: S.version }; // U
      return NONE; // unchanged, or mtime-only (M)
    }
    return S ? { t: "delete", base: S.version } : NONE; // D
  }
  if (!L) {
    if (!S) return MATERIALIZE; // R: new committed entry
    return C.deleted ? ADOPT : MATERIALIZE; // DR
  }
  if (live && sameContent(L, C) && sameMeta(L, C)) {
    // E: equal already; a differing file mtime is set by materializing (metadata only).
    return L.kind === "file" && L.mtime !== C.mtime ? MATERIALIZE : ADOPT;
  }
  const localContent = !S || !sameContent(L, S);
  if (C.deleted) return localContent ? { t: "put", base: 0 } : MATERIALIZE; // RD, R
  if (!localContent) return MATERIALIZE; // R, or MC (local metadata-only change loses)
  const remoteContent = !S || !sameContent(C, S);
  if (!remoteContent) return { t: "put", base: C.version }; // MC: local content wins
  if (L.kind === "dir" && C.kind === "dir") return MATERIALIZE; // MC: dirs differ in mode only
  return CONFLICT; // X
}

function parentOf(path: string): string | null {
  const i = path.lastIndexOf("/");
  return i === -1 ? null : path.slice(0, i);
}

/** Plan one round of sync. Pure and deterministic; see the module comment for the rules. */
export function reconcile(
  local: ReadonlyMap<string, LocalFileRecord>,
  synced: ReadonlyMap<string, SyncedRecord>,
  committed: ReadonlyMap<string, IndexRecord>,
): SyncPlan {
  const all = new Set<string>();
  for (const m of [local, synced, committed]) {
    for (const p of m.keys()) {
      if (all.has(p)) continue;
      all.add(p);
      for (let a = parentOf(p); a !== null && !all.has(a); a = parentOf(a)) all.add(a);
    }
  }
  // Code-unit order: deterministic, and a parent (a prefix) sorts before its children.
  const paths = [...all].sort();

  // Paths in the committed index or the synced state were accepted by the index already.
  const refused: RefusedPath[] = [];
  const refusedSet = new Set<string>();
  for (const p of local.keys()) {
    if (committed.has(p) || synced.has(p)) continue;
    const reason = indexPathProblem(p);
    if (reason) refusedSet.add(p);
  }
  for (const p of paths) {
    if (refusedSet.has(p)) refused.push({ path: p, reason: indexPathProblem(p)! });
  }

  // Bottom-up pass: every path after all its descendants (reverse path order puts children
  // before parents, since a parent is a prefix of its children).
  const decisions = new Map<string, Decision>();
  /** Directories with local content below that stays on disk after the plan. */
  const keptBelow = new Set<string>();
  /** Directories with a committed entry below that is still live after the plan. */
  const liveBelow = new Set<string>();
  for (let i = paths.length - 1; i >= 0; i--) {
    const p = paths[i];
    const L = local.get(p);
    const S = synced.get(p);
    const C = committed.get(p);
    let d: Decision = refusedSet.has(p) ? NONE : decide(L, S, C);

    if (L && L.kind === "dir" && keptBelow.has(p) && d.t === "materialize" && C) {
      // T1: the local directory must stay for what is kept inside it.
      if (C.deleted) d = { t: "put", base: 0 };
      else if (C.kind !== "dir") d = CONFLICT;
    }
    if (d.t === "delete" && liveBelow.has(p)) {
      // T2: committed entries below survive (changed remotely, or new): restore the dir.
      d = C && !C.deleted ? MATERIALIZE : NONE;
    }
    if (d.t === "put" && L && L.kind !== "dir" && liveBelow.has(p)) {
      // T3: a file replacing a directory whose committed contents survive.
      d = C && !C.deleted ? CONFLICT : NONE;
    }
    decisions.set(p, d);

    const parent = parentOf(p);
    if (parent === null) continue;
    const removedLocally = d.t === "materialize" && C !== undefined && C.deleted;
    if ((L !== undefined && !removedLocally) || keptBelow.has(p)) keptBelow.add(parent);
    const liveAfter = (C !== undefined && !C.deleted && d.t !== "delete") || d.t === "put" ||
      liveBelow.has(p);
    if (liveAfter) liveBelow.add(parent);
  }

  // Top-down pass (T4): nothing below a local directory in conflict is planned this round.
  const conflictDirs = new Set<string>();
  for (const p of paths) {
    const d = decisions.get(p)!;
    if (d.t === "conflict" && local.get(p)?.kind === "dir") conflictDirs.add(p);
  }
  if (conflictDirs.size > 0) {
    for (const p of paths) {
      for (let a = parentOf(p); a !== null; a = parentOf(a)) {
        if (conflictDirs.has(a)) {
          decisions.set(p, NONE);
          break;
        }
      }
    }
  }

  const { ops: upload, waves: uploadWaves, after: uploadDeps } = buildUploads(
    paths,
    decisions,
    local,
    synced,
    committed,
  );
  const materialize: IndexRecord[] = [];
  const conflicts: Conflict[] = [];
  const adopt: string[] = [];
  for (const p of paths) {
    const d = decisions.get(p)!;
    if (d.t === "materialize") materialize.push(committed.get(p)!);
    else if (d.t === "conflict") {
      conflicts.push({ path: p, local: local.get(p)!, committed: committed.get(p)! });
    } else if (d.t === "adopt") adopt.push(p);
  }
  const tombstones = materialize.filter((r) => r.deleted).reverse();
  const lives = materialize.filter((r) => !r.deleted);
  return {
    upload,
    uploadWaves,
    uploadDeps,
    materialize: [...tombstones, ...lives],
    conflicts,
    adopt,
    refused,
  };
}

/** Ops for the put/delete decisions, with renames detected (rule N), in dependency order. */
function buildUploads(
  paths: readonly string[],
  decisions: ReadonlyMap<string, Decision>,
  local: ReadonlyMap<string, LocalFileRecord>,
  synced: ReadonlyMap<string, SyncedRecord>,
  committed: ReadonlyMap<string, IndexRecord>,
): Ordered {
  const puts: string[] = [];
  const deletes: string[] = [];
  for (const p of paths) {
    const d = decisions.get(p)!;
    if (d.t === "put") puts.push(p);
    else if (d.t === "delete") deletes.push(p);
  }
  const base = (p: string) => (decisions.get(p) as { base: number }).base;

  // N: pair gone files with new files of the same content and metadata, in path order.
  const renames: { from: string; to: string }[] = [];
  const renameKey = (root: Uint8Array, mode: number, mtime: number) =>
    `${String.fromCharCode(...root)}:${mode}:${mtime}`;
  const candidates = puts.filter((p) => {
    const L = local.get(p)!;
    return L.kind === "file" && !hashEquals(L.root, EMPTY_FILE_ROOT);
  });
  const gone = new Map<string, { paths: string[]; next: number }>();
  if (candidates.length > 0) {
    for (const p of deletes) {
      const S = synced.get(p)!;
      if (S.kind !== "file" || hashEquals(S.root, EMPTY_FILE_ROOT)) continue;
      const key = renameKey(S.root, S.mode, S.mtime);
      const list = gone.get(key);
      if (list) list.paths.push(p);
      else gone.set(key, { paths: [p], next: 0 });
    }
  }
  if (gone.size > 0) {
    for (const p of candidates) {
      const L = local.get(p)!;
      const list = gone.get(renameKey(L.root, L.mode, L.mtime));
      if (!list || list.next === list.paths.length) continue;
      renames.push({ from: list.paths[list.next++], to: p });
    }
  }

  // Renames given up for delete + put because they took part in an ordering cycle.
  const givenUp = new Set<number>();
  for (;;) {
    const kept = renames.filter((_, k) => !givenUp.has(k));
    const keptFrom = new Set(kept.map((r) => r.from));
    const keptTo = new Set(kept.map((r) => r.to));
    const ops: FileOp[] = [];
    /** Index into `renames` of each rename op in `ops`. */
    const renameOf = new Map<number, number>();
    const putOps: FileOp[] = [];
    for (const p of puts) {
      if (keptTo.has(p)) continue;
      const L = local.get(p)!;
      if (L.kind === "dir") {
        ops.push({ op: "mkdir", path: p, base: base(p), mode: L.mode, mtime: L.mtime });
      } else {
        putOps.push({
          op: "put",
          path: p,
          base: base(p),
          kind: L.kind,
          root: L.root,
          size: L.size,
          mode: L.mode,
          mtime: L.mtime,
          ...(L.kind === "symlink" ? { target: L.target ?? "" } : {}),
        });
      }
    }
    renames.forEach((r, k) => {
      if (givenUp.has(k)) return;
      renameOf.set(ops.length, k);
      ops.push({
        op: "rename",
        from: r.from,
        fromBase: synced.get(r.from)!.version,
        to: r.to,
        toBase: base(r.to),
      });
    });
    for (let i = deletes.length - 1; i >= 0; i--) {
      const p = deletes[i];
      if (keptFrom.has(p)) continue;
      ops.push({ op: "delete", path: p, base: base(p) });
    }
    ops.push(...putOps);
    const ordered = orderOps(ops, committed);
    if (!("cycle" in ordered)) return ordered;
    // Only renames can close a cycle (see the module comment): give up those on it.
    const onCycle = ordered.cycle.filter((i) => renameOf.has(i)).map((i) => renameOf.get(i)!);
    if (onCycle.length === 0) renames.forEach((_, k) => givenUp.add(k));
    for (const k of onCycle) givenUp.add(k);
  }
}

/** The path an op creates (mkdir, put, rename target), or null. */
function created(op: FileOp): string | null {
  return op.op === "delete" ? null : op.op === "rename" ? op.to : op.path;
}

/** The path an op removes from the index (delete, rename source), or null. */
function removed(op: FileOp): string | null {
  return op.op === "delete" ? op.path : op.op === "rename" ? op.from : null;
}

/**
 * Topological order of `ops` by what the state machine checks (see the module comment),
 * keeping the given order wherever no dependency says otherwise, and grouped in waves. On a
 * cycle, the indices of the ops on it.
 */
function orderOps(
  ops: FileOp[],
  committed: ReadonlyMap<string, IndexRecord>,
): Ordered | { cycle: number[] } {
  const mkdirAt = new Map<string, number>();
  const removalsByFold = new Map<string, number[]>();
  const removals: { path: string; i: number }[] = [];
  ops.forEach((op, i) => {
    if (op.op === "mkdir") mkdirAt.set(op.path, i);
    const r = removed(op);
    if (r !== null) {
      removals.push({ path: r, i });
      const fold = caseFold(r);
      const list = removalsByFold.get(fold);
      if (list) list.push(i);
      else removalsByFold.set(fold, [i]);
    }
  });
  // Code-unit order keeps every prefix range contiguous, for "everything below p" queries.
  removals.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const below = (p: string): number[] => {
    const prefix = `${p}/`;
    let lo = 0, hi = removals.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (removals[mid].path < prefix) lo = mid + 1;
      else hi = mid;
    }
    const out: number[] = [];
    for (let k = lo; k < removals.length && removals[k].path.startsWith(prefix); k++) {
      out.push(removals[k].i);
    }
    return out;
  };
  // Folding is costly (Unicode normalization): only done when something is removed at all.
  const twins = (p: string): number[] => {
    if (removalsByFold.size === 0) return [];
    const list = removalsByFold.get(caseFold(p));
    return list ? list.filter((i) => removed(ops[i]) !== p) : [];
  };
  const isCommittedDir = (p: string) => {
    const c = committed.get(p);
    return c !== undefined && !c.deleted && c.kind === "dir";
  };

  const deps = (i: number): number[] => {
    const op = ops[i];
    const out: number[] = [];
    const c = created(op);
    if (c !== null) {
      for (let a = parentOf(c); a !== null; a = parentOf(a)) {
        const m = mkdirAt.get(a);
        if (m !== undefined) out.push(m);
        out.push(...twins(a));
      }
      out.push(...twins(c));
      // A file or symlink replacing a directory needs it empty first.
      if (op.op !== "mkdir" && isCommittedDir(c)) out.push(...below(c));
    }
    if (op.op === "delete" && isCommittedDir(op.path)) out.push(...below(op.path));
    return out.filter((j) => j !== i);
  };

  // Depth-first post-order with an explicit stack: 0 = new, 1 = in progress, 2 = done.
  // An op's wave is one more than the highest wave among its dependencies.
  const state = new Uint8Array(ops.length);
  const wave = new Int32Array(ops.length);
  const out: FileOp[] = [];
  const waves: FileOp[][] = [];
  const after = new Map<FileOp, FileOp[]>();
  for (let start = 0; start < ops.length; start++) {
    if (state[start] !== 0) continue;
    const stack: { i: number; deps: number[]; next: number }[] = [
      { i: start, deps: deps(start), next: 0 },
    ];
    state[start] = 1;
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (top.next < top.deps.length) {
        const j = top.deps[top.next++];
        if (state[j] === 1) {
          const from = stack.findIndex((f) => f.i === j);
          return { cycle: stack.slice(from).map((f) => f.i) };
        }
        if (state[j] === 0) {
          state[j] = 1;
          stack.push({ i: j, deps: deps(j), next: 0 });
        }
        continue;
      }
      state[top.i] = 2;
      let w = 0;
      for (const j of top.deps) w = Math.max(w, wave[j] + 1);
      wave[top.i] = w;
      if (top.deps.length > 0) after.set(ops[top.i], [...new Set(top.deps)].map((j) => ops[j]));
      out.push(ops[top.i]);
      (waves[w] ??= []).push(ops[top.i]);
      stack.pop();
    }
  }
  return { ops: out, waves, after };
}

/** Ops in dependency order, in waves, and what each op waits for. */
interface Ordered {
  ops: FileOp[];
  waves: FileOp[][];
  after: Map<FileOp, FileOp[]>;
}
