/**
 * Paths as the directory tree keys them: relative, '/'-separated, ordered by their UTF-8 bytes
 * (the order every node can reproduce from the bytes alone, whatever its locale).
 */
import { MAX_PATH_BYTES } from "./format.ts";

const encoder = new TextEncoder();
/** Fatal, BOM-preserving: invalid UTF-8 is an error, and no byte is silently dropped. */
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** UTF-8 bytes of a (well-formed) string. */
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/** Decode UTF-8; returns null when the bytes are not valid UTF-8. */
export function fromUtf8(bytes: Uint8Array): string | null {
  try {
    return decoder.decode(bytes);
  } catch {
    return null;
  }
}

/**
 * Compare two paths by the bytes of their UTF-8 encodings, without encoding them. UTF-16 code
 * unit order equals code point order (and so UTF-8 byte order) except that surrogates
 * (D800-DFFF, i.e. code points >= 0x10000) sort below E000-FFFF; remapping those two ranges at
 * the first differing unit fixes that.
 */
export function comparePaths(a: string, b: string): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      if (x >= 0xd800) x += x >= 0xe000 ? -0x800 : 0x2000;
      if (y >= 0xd800) y += y >= 0xe000 ? -0x800 : 0x2000;
      return x < y ? -1 : 1;
    }
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/**
 * Why `path` cannot be a key of the directory tree, or null if it can: it must be relative,
 * '/'-separated, with no empty, "." or ".." segment, no NUL, well-formed Unicode (a lone
 * surrogate would become U+FFFD in UTF-8 and two names would collide) and at most
 * MAX_PATH_BYTES bytes of UTF-8.
 */
export function pathProblem(path: string): string | null {
  if (typeof path !== "string") return "path must be a string";
  if (path.length === 0) return "path is empty";
  if (!path.isWellFormed()) return "path is not well-formed Unicode";
  if (path.includes("\0")) return "path contains NUL";
  for (const segment of path.split("/")) {
    if (segment === "") return "path has an empty segment (leading, trailing or double '/')";
    if (segment === "." || segment === "..") return `path has a '${segment}' segment`;
  }
  if (path.length > MAX_PATH_BYTES || utf8(path).length > MAX_PATH_BYTES) {
    return `path is longer than ${MAX_PATH_BYTES} bytes`;
  }
  return null;
}

/** Why `target` cannot be stored as a symlink target, or null: non-empty, no NUL, bounded. */
export function targetProblem(target: string): string | null {
  if (typeof target !== "string") return "symlink target must be a string";
  if (target.length === 0) return "symlink target is empty";
  if (!target.isWellFormed()) return "symlink target is not well-formed Unicode";
  if (target.includes("\0")) return "symlink target contains NUL";
  if (target.length > MAX_PATH_BYTES || utf8(target).length > MAX_PATH_BYTES) {
    return `symlink target is longer than ${MAX_PATH_BYTES} bytes`;
  }
  return null;
}
