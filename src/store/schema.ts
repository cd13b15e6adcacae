/**
 * The Deno KV schema of a node's local data, in one place: key builders and validating
 * parsers for every value kind. Hashes are stored as raw 32-byte Uint8Array key parts.
 *
 * | key                      | value            | meaning                                   |
 * |--------------------------|------------------|-------------------------------------------|
 * | ["obj", hash]            | ObjectLocation   | where an object lies in the pack files    |
 * | ["loc", hash]            | ChunkLocation    | a file of the tree that holds this chunk  |
 * | ["file", path]           | LocalFileRecord  | what the last scan saw at this path       |
 * | ["snap", id]             | SnapshotRecord   | a named snapshot of the directory tree    |
 * | ["meta", name]           | varies           | small facts, e.g. the last scanned root   |
 */
import { assertHash, type Hash } from "../chunk/hash.ts";

/** Position of an object's payload inside a pack file. */
export interface ObjectLocation {
  pack: number;
  offset: number;
  length: number;
}

/** Where a chunk's bytes lie inside a file of the synced tree. */
export interface ChunkLocation {
  /** Path relative to the synced directory, POSIX separators. */
  path: string;
  offset: number;
  length: number;
}

/** Kinds of entries in the tree. */
export type EntryKind = "file" | "dir" | "symlink";

/** What the last scan saw at one path: enough to skip rehashing an unchanged file. */
export interface LocalFileRecord {
  kind: EntryKind;
  size: number;
  /** Modification time, integer milliseconds since the epoch. */
  mtime: number;
  mode: number;
  /** Inode number (0 where the platform has none). */
  ino: number;
  /** Merkle root of the content (files), or of the target string (symlinks). */
  root: Hash;
  /** Symlink target, for symlinks only. */
  target?: string;
}

/** A named snapshot of the directory tree. */
export interface SnapshotRecord {
  id: string;
  label: string;
  /** Directory tree root. */
  root: Hash;
  /** Milliseconds since the epoch. */
  time: number;
  files: number;
  bytes: number;
}

export const objectKey = (hash: Hash): Deno.KvKey => ["obj", hash];
export const chunkLocationKey = (hash: Hash): Deno.KvKey => ["loc", hash];
export const fileKey = (path: string): Deno.KvKey => ["file", path];
export const FILE_PREFIX: Deno.KvKey = ["file"];

/**
 * The keys `[...prefix, p]` of every path p below `path` (not `path` itself). Keys sort by
 * UTF-8 bytes, so everything under "p/" lies in ["p/", "p0"): "0" is the byte after "/".
 */
export function keysBelow(prefix: Deno.KvKey, path: string): Deno.KvListSelector {
  return { start: [...prefix, `${path}/`], end: [...prefix, `${path}0`] };
}

/**
 * The records `[...prefix, p]` of these paths and of every path below them, parsed: what a
 * caller that touched a few paths reads again (a path may name a directory).
 */
export async function loadRecordsUnder<T>(
  kv: Deno.Kv,
  prefix: Deno.KvKey,
  paths: readonly string[],
  parse: (value: unknown) => T,
): Promise<Map<string, T>> {
  const out = new Map<string, T>();
  for (const path of new Set(paths)) {
    const own = await kv.get([...prefix, path]);
    if (own.value !== null) out.set(path, parse(own.value));
    for await (const entry of kv.list(keysBelow(prefix, path))) {
      out.set(entry.key[prefix.length] as string, parse(entry.value));
    }
  }
  return out;
}
export const snapshotKey = (id: string): Deno.KvKey => ["snap", id];
export const SNAPSHOT_PREFIX: Deno.KvKey = ["snap"];
export const metaKey = (name: string): Deno.KvKey => ["meta", name];

/** A stored value did not have the expected shape: the local database is damaged. */
export class SchemaError extends Error {
  override name = "SchemaError";
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null) throw new SchemaError(`${what}: not a record`);
  return value as Record<string, unknown>;
}

function nonNegativeInt(r: Record<string, unknown>, field: string, what: string): number {
  const v = r[field];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new SchemaError(`${what}: field ${field} must be a non-negative integer`);
  }
  return v;
}

function integer(r: Record<string, unknown>, field: string, what: string): number {
  const v = r[field];
  if (typeof v !== "number" || !Number.isSafeInteger(v)) {
    throw new SchemaError(`${what}: field ${field} must be an integer`);
  }
  return v;
}

function str(r: Record<string, unknown>, field: string, what: string): string {
  const v = r[field];
  if (typeof v !== "string") throw new SchemaError(`${what}: field ${field} must be a string`);
  return v;
}

function hashField(r: Record<string, unknown>, field: string, what: string): Hash {
  try {
    assertHash(r[field], `${what}: field ${field}`);
  } catch (e) {
    throw new SchemaError((e as Error).message);
  }
  return r[field] as Hash;
}

export function parseObjectLocation(value: unknown): ObjectLocation {
  const r = record(value, "object location");
  return {
    pack: nonNegativeInt(r, "pack", "object location"),
    offset: nonNegativeInt(r, "offset", "object location"),
    length: nonNegativeInt(r, "length", "object location"),
  };
}

export function parseChunkLocation(value: unknown): ChunkLocation {
  const r = record(value, "chunk location");
  return {
    path: str(r, "path", "chunk location"),
    offset: nonNegativeInt(r, "offset", "chunk location"),
    length: nonNegativeInt(r, "length", "chunk location"),
  };
}

const KINDS: readonly EntryKind[] = ["file", "dir", "symlink"];

export function parseLocalFileRecord(value: unknown): LocalFileRecord {
  const what = "file record";
  const r = record(value, what);
  const kind = r.kind as EntryKind;
  if (!KINDS.includes(kind)) throw new SchemaError(`${what}: bad kind`);
  const out: LocalFileRecord = {
    kind,
    size: nonNegativeInt(r, "size", what),
    mtime: integer(r, "mtime", what),
    mode: nonNegativeInt(r, "mode", what),
    ino: nonNegativeInt(r, "ino", what),
    root: hashField(r, "root", what),
  };
  if (kind === "symlink") out.target = str(r, "target", what);
  return out;
}

export function parseSnapshotRecord(value: unknown): SnapshotRecord {
  const what = "snapshot";
  const r = record(value, what);
  return {
    id: str(r, "id", what),
    label: str(r, "label", what),
    root: hashField(r, "root", what),
    time: nonNegativeInt(r, "time", what),
    files: nonNegativeInt(r, "files", what),
    bytes: nonNegativeInt(r, "bytes", what),
  };
}
