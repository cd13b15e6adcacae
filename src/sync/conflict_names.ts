/**
 * Names of conflict copies: when both this node and the cluster changed a path, the local
 * content is kept next to it as `name.conflict-<node>-<YYYYMMDD-HHMMSS>.ext` (and is itself
 * synced, so every node ends up with both versions). The extension is kept last so the copy
 * still opens with the right program; the time is UTC so every node renders it the same way.
 */
import { MAX_NAME_BYTES } from "../fsm/mod.ts";

const encoder = new TextEncoder();
/** Longest run of characters after the last dot that still counts as an extension. */
const MAX_EXTENSION_CHARS = 16;
/** Longest node name kept in a conflict copy name. */
const MAX_NODE_CHARS = 32;
/** Most names tried by uniqueConflictCopyName before giving up. */
export const MAX_CONFLICT_ATTEMPTS = 1000;

/** Every candidate was taken (or `exists` kept saying so). */
export class ConflictNameError extends Error {
  override name = "ConflictNameError";
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, "0");
}

/** `YYYYMMDD-HHMMSS` in UTC. */
export function conflictTimestamp(time: Date | number): string {
  const d = typeof time === "number" ? new Date(time) : time;
  if (Number.isNaN(d.getTime())) throw new RangeError("conflict copy time is not a valid date");
  return `${pad(d.getUTCFullYear(), 4)}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}-` +
    `${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}${pad(d.getUTCSeconds())}`;
}

/**
 * The node name as it appears in a copy's name: letters, digits, '_' and '-' only (a '.'
 * would be mistaken for an extension, a '/' for a directory), at most 32 characters.
 */
export function sanitizeNodeName(nodeName: string): string {
  const clean = nodeName.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, MAX_NODE_CHARS);
  return clean.length === 0 ? "node" : clean;
}

/** Split a file name into stem and extension (".txt"); dotfiles and "a." have none. */
export function splitExtension(name: string): { stem: string; ext: string } {
  const dot = name.lastIndexOf(".");
  if (dot <= 0 || dot === name.length - 1 || name.length - dot - 1 > MAX_EXTENSION_CHARS) {
    return { stem: name, ext: "" };
  }
  return { stem: name.slice(0, dot), ext: name.slice(dot) };
}

/** `s` cut (at a code point boundary) to at most `maxBytes` of UTF-8. */
function truncateUtf8(s: string, maxBytes: number): string {
  if (encoder.encode(s).length <= maxBytes) return s;
  let out = "";
  let bytes = 0;
  for (const ch of s) {
    const n = encoder.encode(ch).length;
    if (bytes + n > maxBytes) break;
    out += ch;
    bytes += n;
  }
  return out;
}

/**
 * The conflict copy path for `path`: `dir/stem.conflict-<node>-<YYYYMMDD-HHMMSS>[-N].ext`,
 * where `-N` appears for counter >= 2. The stem is shortened when needed so the name stays
 * within 255 bytes of UTF-8.
 */
export function conflictCopyName(
  path: string,
  nodeName: string,
  time: Date | number,
  counter = 1,
): string {
  if (!Number.isSafeInteger(counter) || counter < 1) {
    throw new RangeError("conflict copy counter must be a positive integer");
  }
  const slash = path.lastIndexOf("/");
  const dir = slash === -1 ? "" : path.slice(0, slash + 1);
  const name = path.slice(slash + 1);
  if (name.length === 0) throw new TypeError(`no file name in ${JSON.stringify(path)}`);
  const { stem, ext } = splitExtension(name);
  const suffix = `.conflict-${sanitizeNodeName(nodeName)}-${conflictTimestamp(time)}` +
    (counter >= 2 ? `-${counter}` : "");
  const room = MAX_NAME_BYTES - encoder.encode(suffix + ext).length;
  return `${dir}${truncateUtf8(stem, room)}${suffix}${ext}`;
}

/**
 * The first conflict copy name for `path` that `exists` says is free (counter 1, 2, 3, ...).
 * `exists` should answer for the disk and for the committed index alike.
 */
export async function uniqueConflictCopyName(
  path: string,
  nodeName: string,
  time: Date | number,
  exists: (candidate: string) => boolean | Promise<boolean>,
): Promise<string> {
  for (let counter = 1; counter <= MAX_CONFLICT_ATTEMPTS; counter++) {
    const candidate = conflictCopyName(path, nodeName, time, counter);
    if (!(await exists(candidate))) return candidate;
  }
  throw new ConflictNameError(
    `no free conflict copy name for ${path} after ${MAX_CONFLICT_ATTEMPTS} attempts`,
  );
}
