/**
 * Path policy of the replicated file index, in one place. A path is a normalized relative POSIX
 * path: no leading '/', no empty, '.' or '..' segment, no NUL, well-formed Unicode, at most
 * 4,096 bytes in all and 255 bytes per name (what Linux file systems accept), and never inside
 * `.filesync/`, which is each node's private data.
 *
 * Names that differ only in case: the index refuses a second live path whose case-folded form
 * equals an existing one ("case conflict"), so a cluster that includes a case-insensitive file
 * system (macOS, Windows) never holds two entries that would land on one file there. The
 * uploader keeps the refused content as a conflict copy, so nothing is lost.
 */
import { pathProblem } from "../merkle/mod.ts";

/** Longest single name, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 255;
const PRIVATE_DIR = ".filesync";
const encoder = new TextEncoder();

/** A path that the index refuses, with the reason. */
export class PathError extends Error {
  override name = "PathError";
  constructor(readonly path: string, reason: string) {
    super(`invalid path ${JSON.stringify(path.slice(0, 200))}: ${reason}`);
  }
}

/** Why `path` is not acceptable, or null. */
export function indexPathProblem(path: string): string | null {
  const problem = pathProblem(path);
  if (problem) return problem;
  for (const name of path.split("/")) {
    if (encoder.encode(name).length > MAX_NAME_BYTES) {
      return `a name is longer than ${MAX_NAME_BYTES} bytes`;
    }
    if (name === PRIVATE_DIR) return `${PRIVATE_DIR}/ is private to each node`;
  }
  return null;
}

/** Throw PathError unless `path` is acceptable. */
export function validatePath(path: string): string {
  const problem = indexPathProblem(path);
  if (problem) throw new PathError(path, problem);
  return path;
}

/** The key under which paths that differ only in case collide. */
export function caseFold(path: string): string {
  return path.normalize("NFC").toLowerCase();
}

/** The parent directories of a path, outermost first ("a/b/c" -> ["a", "a/b"]). */
export function ancestors(path: string): string[] {
  const out: string[] = [];
  let i = path.indexOf("/");
  while (i !== -1) {
    out.push(path.slice(0, i));
    i = path.indexOf("/", i + 1);
  }
  return out;
}
