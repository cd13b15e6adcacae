/**
 * Walks a synced directory without following symlinks, honouring ignore rules, and reports
 * what it finds with the metadata a rescan compares (size, mtime, mode, inode). Unreadable
 * directories and special files are reported as problems, not thrown, so one bad entry does
 * not stop a scan of a large tree.
 */
import { IGNORE_FILE_NAME, IgnoreRules } from "./ignore_rules.ts";
import type { EntryKind } from "../store/mod.ts";
import { isTempName } from "./materializer.ts";
import { syncedMode } from "../fsm/mod.ts";

/** One entry of the tree as the file system shows it now. */
export interface WalkEntry {
  /** Relative POSIX path. */
  path: string;
  kind: EntryKind;
  size: number;
  /** Integer milliseconds since the epoch. */
  mtime: number;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  ino: number;
  /** Symlink target, as stored in the link (never followed). */
  target?: string;
}

/** Something the walk could not take in. */
export interface WalkProblem {
  path: string;
  message: string;
}

/** Metadata of a stat result in the form the index stores. */
export function statFields(
  info: Deno.FileInfo,
): Pick<WalkEntry, "size" | "mtime" | "mode" | "ino"> {
  return {
    size: info.size,
    mtime: info.mtime ? Math.trunc(info.mtime.getTime()) : 0,
    // As the index keeps it (no setuid/setgid), so a local setuid bit is not a change to sync.
    mode: syncedMode(info.mode ?? 0o644),
    ino: info.ino ?? 0,
  };
}

async function readIgnoreFile(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Every entry under `root` that is not ignored, directories before their contents, each
 * directory's children in code-unit order. Problems go to `problems`.
 */
export async function* walkTree(
  root: string,
  problems: WalkProblem[],
): AsyncGenerator<WalkEntry> {
  yield* walkDir(root, "", IgnoreRules.root(), problems);
}

/**
 * The entries at and below each of `paths` (relative, as a watcher reports them; they may no
 * longer exist), as walkTree would report them: the ignore rules of every ancestor apply, and
 * a path below an ignored directory, a symlink or a non-directory is not in the tree. A path
 * that is not in the tree yields nothing (its old records are the caller's to drop); one that
 * cannot be looked at (permissions) is a problem reported for that path, so its records are
 * kept. Paths under another listed path are walked once, with it. The directory holding each
 * path is reported too (its own entry only), since an entry created or removed in it changed
 * its mtime.
 */
export async function* walkPaths(
  root: string,
  paths: readonly string[],
  problems: WalkProblem[],
): AsyncGenerator<WalkEntry> {
  /**
   * lstat of a path, null if it is not there. Any other failure (permission) is a problem
   * for `reportAs`, so the caller keeps what it knew there rather than taking it for gone.
   */
  const look = (rel: string, reportAs: string): Deno.FileInfo | null | "failed" => {
    try {
      return Deno.lstatSync(`${root}/${rel}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return null;
      problems.push({ path: reportAs, message: `cannot stat ${rel}: ${(e as Error).message}` });
      return "failed";
    }
  };
  const rulesOf = new Map<string, IgnoreRules | null | "failed">();
  /**
   * The rules in force in directory `dir`: null if `dir` is not a directory of the tree,
   * "failed" if that could not be told (a problem is recorded for `reportAs`).
   */
  const dirRules = async (
    dir: string,
    reportAs: string,
  ): Promise<IgnoreRules | null | "failed"> => {
    const known = rulesOf.get(dir);
    if (known !== undefined) {
      if (known === "failed") problems.push({ path: reportAs, message: `cannot read ${dir}` });
      return known;
    }
    let rules: IgnoreRules | null | "failed" = null;
    try {
      if (dir === "") {
        rules = IgnoreRules.root().child("", await readIgnoreFile(`${root}/${IGNORE_FILE_NAME}`));
      } else {
        const cut = dir.lastIndexOf("/");
        const parent = await dirRules(cut < 0 ? "" : dir.slice(0, cut), reportAs);
        if (parent === "failed") rules = "failed";
        else if (parent !== null) {
          const info = look(dir, reportAs);
          if (info === "failed") rules = "failed";
          else if (info !== null && info.isDirectory && !parent.ignores(dir, true)) {
            rules = parent.child(dir, await readIgnoreFile(`${root}/${dir}/${IGNORE_FILE_NAME}`));
          }
        }
      }
    } catch (e) {
      problems.push({
        path: reportAs,
        message: `cannot read ${dir || "."}: ${(e as Error).message}`,
      });
      rules = "failed";
    }
    rulesOf.set(dir, rules);
    return rules;
  };
  const listed = new Set(paths);
  /** Whether a listed path is `path` or one of its ancestors (its walk covers `path`). */
  const covered = (path: string) => {
    for (let p = path; p !== ""; p = p.slice(0, Math.max(0, p.lastIndexOf("/")))) {
      if (listed.has(p)) return p;
    }
    return null;
  };
  const parents = new Set<string>();
  for (const path of [...listed].sort()) {
    const cut = path.lastIndexOf("/");
    const parent = cut < 0 ? "" : path.slice(0, cut);
    if (parent !== "" && covered(parent) !== null) continue; // walked with an ancestor
    if (isTempName(path.slice(cut + 1))) continue;
    const rules = await dirRules(parent, path);
    if (rules === null || rules === "failed") continue;
    if (parent !== "") parents.add(parent);
    const info = look(path, path);
    if (info !== "failed") yield* walkEntry(root, path, info, rules, problems);
  }
  // An entry created or removed changes its directory's mtime: those directories are
  // reported as they are now (not descended into), unless walked above.
  for (const dir of [...parents].sort()) {
    if (covered(dir) !== null) continue;
    const info = look(dir, dir);
    if (info !== null && info !== "failed" && info.isDirectory) {
      yield { path: dir, kind: "dir", ...statFields(info), size: 0 };
    }
  }
}

async function* walkDir(
  root: string,
  rel: string,
  parentRules: IgnoreRules,
  problems: WalkProblem[],
): AsyncGenerator<WalkEntry> {
  const abs = rel === "" ? root : `${root}/${rel}`;
  let rules = parentRules;
  const names: string[] = [];
  try {
    rules = parentRules.child(rel, await readIgnoreFile(`${abs}/${IGNORE_FILE_NAME}`));
    for await (const e of Deno.readDir(abs)) names.push(e.name);
  } catch (e) {
    problems.push({ path: rel || ".", message: `cannot read directory: ${(e as Error).message}` });
    return;
  }
  names.sort();
  for (const name of names) {
    // The materializer's temp files are its own business until renamed into place.
    if (isTempName(name)) continue;
    const path = rel === "" ? name : `${rel}/${name}`;
    let info: Deno.FileInfo;
    try {
      // Sync: per-call overhead dominates a walk, and a sync lstat costs a fraction of an
      // async one.
      info = Deno.lstatSync(`${root}/${path}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue; // deleted while we walked
      problems.push({ path, message: `cannot stat: ${(e as Error).message}` });
      continue;
    }
    yield* walkEntry(root, path, info, rules, problems);
  }
}

/** One entry (and, for a directory, everything below it) under its directory's rules. */
async function* walkEntry(
  root: string,
  path: string,
  info: Deno.FileInfo | null,
  rules: IgnoreRules,
  problems: WalkProblem[],
): AsyncGenerator<WalkEntry> {
  if (info === null || rules.ignores(path, info.isDirectory)) return;
  if (info.isSymlink) {
    try {
      const target = await Deno.readLink(`${root}/${path}`);
      yield { path, kind: "symlink", ...statFields(info), target };
    } catch (e) {
      problems.push({ path, message: `cannot read symlink: ${(e as Error).message}` });
    }
  } else if (info.isDirectory) {
    yield { path, kind: "dir", ...statFields(info), size: 0 };
    yield* walkDir(root, path, rules, problems);
  } else if (info.isFile) {
    yield { path, kind: "file", ...statFields(info) };
  } else {
    problems.push({ path, message: "not a regular file, directory or symlink; skipped" });
  }
}
