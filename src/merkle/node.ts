/**
 * Tree nodes as content-addressed objects: their decoded shapes, the canonical encoder and the
 * strict decoder (see format.ts for the byte layout). A node's id is SHA-256 of its bytes.
 */
import { HASH_LENGTH, hashEquals, sha256 } from "../chunk/mod.ts";
import type { Hash } from "../chunk/mod.ts";
import { ByteReader, MAX_UVARINT, unzigzag, writeUvarint, zigzag } from "./bytes.ts";
import { MerkleDecodeError, MerkleInputError } from "./errors.ts";
import {
  DIR_NODE_KIND,
  FILE_NODE_KIND,
  FORMAT_VERSION,
  HEADER_BYTES,
  MAX_ENTRIES,
  MAX_LEVEL,
  MAX_MODE,
  MAX_MTIME,
  MAX_NODE_BYTES,
  MAX_PATH_BYTES,
  MIN_MTIME,
} from "./format.ts";
import { comparePaths, fromUtf8, pathProblem, targetProblem, utf8 } from "./paths.ts";

/** One chunk of a file, as a file leaf holds it. */
export interface ChunkRef {
  hash: Hash;
  /** Chunk length in bytes, >= 1. */
  length: number;
}

/** A reference from a file inner node to a child node. */
export interface FileChildRef {
  hash: Hash;
  /** Total bytes of file content below the child, >= 1. */
  size: number;
}

/** What a directory entry names. */
export type DirEntryKind = "file" | "dir" | "symlink";

/**
 * One path of the local file index. Rules (enforced by the encoder, so each entry has exactly
 * one encoding):
 * - file: `root` is the file tree root (EMPTY_FILE_ROOT for an empty file), `size` its bytes;
 * - dir: `root` is EMPTY_FILE_ROOT and `size` is 0: a directory has no content of its own;
 * - symlink: `target` is the link text, stored inline (it is short, and the materializer needs
 *   it without a chunk fetch); `root` is EMPTY_FILE_ROOT and `size` is the target's UTF-8 byte
 *   length (what lstat reports on Linux).
 * `target` is present only on symlinks. `mode` holds permission bits only (0..0o7777); `mtime`
 * is integer milliseconds since the epoch, within +-2^52.
 */
export interface DirEntry {
  path: string;
  kind: DirEntryKind;
  root: Hash;
  size: number;
  mode: number;
  mtime: number;
  target?: string;
}

/** A reference from a directory inner node to a child node. */
export interface DirChildRef {
  hash: Hash;
  /** Number of entries below the child, >= 1. */
  count: number;
  /** Path of the first entry below the child (a separator for lookups by path). */
  firstPath: string;
}

/** Level-0 node of a file tree. `size` is derived (sum of chunk lengths), not stored. */
export interface FileLeafNode {
  type: "file-leaf";
  level: 0;
  chunks: ChunkRef[];
  size: number;
}

/** Level >= 1 node of a file tree. `size` is derived (sum of the children's sizes). */
export interface FileInnerNode {
  type: "file-inner";
  level: number;
  children: FileChildRef[];
  size: number;
}

/** Level-0 node of a directory tree; entries strictly sorted by comparePaths. */
export interface DirLeafNode {
  type: "dir-leaf";
  level: 0;
  entries: DirEntry[];
  count: number;
}

/** Level >= 1 node of a directory tree; children strictly sorted by firstPath. */
export interface DirInnerNode {
  type: "dir-inner";
  level: number;
  children: DirChildRef[];
  count: number;
}

export type FileNode = FileLeafNode | FileInnerNode;
export type DirNode = DirLeafNode | DirInnerNode;
export type MerkleNode = FileNode | DirNode;

/** Bytes of the file tree node with no entries: the tree of an empty file. */
export const EMPTY_FILE_NODE: Uint8Array = Uint8Array.of(FORMAT_VERSION, FILE_NODE_KIND, 0, 0, 0);
/** Root of every empty file (SHA-256 of EMPTY_FILE_NODE). Do not mutate. */
export const EMPTY_FILE_ROOT: Hash = sha256(EMPTY_FILE_NODE);
/** Bytes of the directory tree node with no entries. */
export const EMPTY_DIR_NODE: Uint8Array = Uint8Array.of(FORMAT_VERSION, DIR_NODE_KIND, 0, 0, 0);
/** Root of the empty directory tree (SHA-256 of EMPTY_DIR_NODE). Do not mutate. */
export const EMPTY_DIR_ROOT: Hash = sha256(EMPTY_DIR_NODE);

const ENTRY_KIND_CODES: Record<DirEntryKind, number> = { file: 0, dir: 1, symlink: 2 };
const ENTRY_KINDS: readonly DirEntryKind[] = ["file", "dir", "symlink"];

function isHash(h: unknown): h is Hash {
  return h instanceof Uint8Array && h.length === HASH_LENGTH;
}

/** Why `e` cannot be stored, or null if it can (the rules are on DirEntry). */
export function dirEntryProblem(e: DirEntry): string | null {
  if (e === null || typeof e !== "object") return "entry must be an object";
  const p = pathProblem(e.path);
  if (p) return p;
  if (!Number.isInteger(e.mode) || e.mode < 0 || e.mode > MAX_MODE) {
    return `mode must be an integer in 0..0o7777, got ${e.mode}`;
  }
  if (!Number.isInteger(e.mtime) || e.mtime < MIN_MTIME || e.mtime > MAX_MTIME) {
    return `mtime must be integer milliseconds within +-2^52, got ${e.mtime}`;
  }
  if (!isHash(e.root)) return "root must be a 32-byte hash";
  switch (e.kind) {
    case "file":
      if (!Number.isSafeInteger(e.size) || e.size < 0) return `bad file size ${e.size}`;
      if (e.target !== undefined) return "only symlinks have a target";
      return null;
    case "dir":
      if (!hashEquals(e.root, EMPTY_FILE_ROOT)) return "a dir's root must be EMPTY_FILE_ROOT";
      if (e.size !== 0) return "a dir's size must be 0";
      if (e.target !== undefined) return "only symlinks have a target";
      return null;
    case "symlink": {
      if (e.target === undefined) return "a symlink needs a target";
      const t = targetProblem(e.target);
      if (t) return t;
      if (!hashEquals(e.root, EMPTY_FILE_ROOT)) return "a symlink's root must be EMPTY_FILE_ROOT";
      const len = utf8(e.target).length;
      if (e.size !== len) return `a symlink's size must be its target's byte length ${len}`;
      return null;
    }
    default:
      return `unknown entry kind ${JSON.stringify((e as { kind: unknown }).kind)}`;
  }
}

/**
 * A node under construction: a fixed buffer of MAX_NODE_BYTES, entries appended in place, the
 * header filled in by finish(). Builders keep one per level and reuse it.
 */
export class NodeBuffer {
  readonly buf: Uint8Array = new Uint8Array(MAX_NODE_BYTES);
  pos: number = HEADER_BYTES;
  count = 0;
  readonly kind: number;
  readonly level: number;

  constructor(kind: number, level: number) {
    if (level > MAX_LEVEL) throw new MerkleInputError(`tree deeper than ${MAX_LEVEL} levels`);
    this.kind = kind;
    this.level = level;
  }

  /** Make room for `n` more bytes and one more entry, or refuse. */
  reserve(n: number): void {
    if (this.count >= MAX_ENTRIES) {
      throw new MerkleInputError(`node has more than ${MAX_ENTRIES} entries`);
    }
    if (this.pos + n > MAX_NODE_BYTES) {
      throw new MerkleInputError(`node larger than ${MAX_NODE_BYTES} bytes`);
    }
  }

  /** The finished node's bytes (a copy); the buffer is empty again afterwards. */
  finish(): Uint8Array {
    const b = this.buf;
    b[0] = FORMAT_VERSION;
    b[1] = this.kind;
    b[2] = this.level;
    b[3] = this.count >>> 8;
    b[4] = this.count & 255;
    const out = b.slice(0, this.pos);
    this.pos = HEADER_BYTES;
    this.count = 0;
    return out;
  }
}

/** Append a chunk reference to a file leaf. */
export function writeChunkRef(nb: NodeBuffer, hash: Hash, length: number): void {
  if (!isHash(hash)) throw new MerkleInputError("chunk hash must be a 32-byte Uint8Array");
  if (!Number.isSafeInteger(length) || length < 1) {
    throw new MerkleInputError(`chunk length must be a positive integer, got ${length}`);
  }
  nb.reserve(HASH_LENGTH + 8);
  nb.buf.set(hash, nb.pos);
  nb.pos = writeUvarint(nb.buf, nb.pos + HASH_LENGTH, length);
  nb.count++;
}

/** Append a child reference to a file inner node. */
export function writeFileChild(nb: NodeBuffer, hash: Hash, size: number): void {
  if (!isHash(hash)) throw new MerkleInputError("child hash must be a 32-byte Uint8Array");
  if (!Number.isSafeInteger(size) || size < 1) {
    throw new MerkleInputError(`child size must be a positive integer, got ${size}`);
  }
  nb.reserve(HASH_LENGTH + 8);
  nb.buf.set(hash, nb.pos);
  nb.pos = writeUvarint(nb.buf, nb.pos + HASH_LENGTH, size);
  nb.count++;
}

/** Append a directory entry (validated) to a dir leaf; returns the path's UTF-8 bytes. */
export function writeDirEntry(nb: NodeBuffer, e: DirEntry): Uint8Array {
  const problem = dirEntryProblem(e);
  if (problem) {
    const where = typeof e?.path === "string" ? ` ${JSON.stringify(e.path.slice(0, 200))}` : "";
    throw new MerkleInputError(`invalid dir entry${where}: ${problem}`);
  }
  const path = utf8(e.path);
  const target = e.kind === "symlink" ? utf8(e.target as string) : null;
  nb.reserve(path.length + (target ? target.length : 0) + HASH_LENGTH + 40);
  const b = nb.buf;
  let pos = writeUvarint(b, nb.pos, path.length);
  b.set(path, pos);
  pos += path.length;
  b[pos++] = ENTRY_KIND_CODES[e.kind];
  if (e.kind === "file") {
    b.set(e.root, pos);
    pos = writeUvarint(b, pos + HASH_LENGTH, e.size);
  } else if (target) {
    pos = writeUvarint(b, pos, target.length);
    b.set(target, pos);
    pos += target.length;
  }
  pos = writeUvarint(b, pos, e.mode);
  nb.pos = writeUvarint(b, pos, zigzag(e.mtime));
  nb.count++;
  return path;
}

/** Append a child reference to a dir inner node. `firstPath` is UTF-8 of a valid path. */
export function writeDirChild(
  nb: NodeBuffer,
  hash: Hash,
  count: number,
  firstPath: Uint8Array,
): void {
  if (!isHash(hash)) throw new MerkleInputError("child hash must be a 32-byte Uint8Array");
  if (!Number.isSafeInteger(count) || count < 1) {
    throw new MerkleInputError(`child count must be a positive integer, got ${count}`);
  }
  if (firstPath.length < 1 || firstPath.length > MAX_PATH_BYTES) {
    throw new MerkleInputError("child firstPath must be 1..4096 bytes");
  }
  nb.reserve(HASH_LENGTH + 16 + firstPath.length);
  const b = nb.buf;
  b.set(hash, nb.pos);
  let pos = writeUvarint(b, nb.pos + HASH_LENGTH, count);
  pos = writeUvarint(b, pos, firstPath.length);
  b.set(firstPath, pos);
  nb.pos = pos + firstPath.length;
  nb.count++;
}

function checkInnerLevel(level: number, n: number): void {
  if (!Number.isInteger(level) || level < 1 || level > MAX_LEVEL) {
    throw new MerkleInputError(`inner node level must be 1..${MAX_LEVEL}, got ${level}`);
  }
  if (n < 1) throw new MerkleInputError("an inner node needs at least one child");
}

/**
 * Canonical bytes of a node. The derived `size`/`count` fields are ignored; everything else is
 * validated (entry rules, strict path order, entry and byte limits) with MerkleInputError.
 */
export function encodeNode(node: MerkleNode): Uint8Array {
  switch (node.type) {
    case "file-leaf": {
      const nb = new NodeBuffer(FILE_NODE_KIND, 0);
      for (const c of node.chunks) writeChunkRef(nb, c.hash, c.length);
      return nb.finish();
    }
    case "file-inner": {
      checkInnerLevel(node.level, node.children.length);
      const nb = new NodeBuffer(FILE_NODE_KIND, node.level);
      for (const c of node.children) writeFileChild(nb, c.hash, c.size);
      return nb.finish();
    }
    case "dir-leaf": {
      const nb = new NodeBuffer(DIR_NODE_KIND, 0);
      let prev: string | null = null;
      for (const e of node.entries) {
        if (prev !== null && comparePaths(prev, e.path) >= 0) {
          throw new MerkleInputError(
            `dir entries not strictly sorted at ${JSON.stringify(e.path)}`,
          );
        }
        writeDirEntry(nb, e);
        prev = e.path;
      }
      return nb.finish();
    }
    case "dir-inner": {
      checkInnerLevel(node.level, node.children.length);
      const nb = new NodeBuffer(DIR_NODE_KIND, node.level);
      let prev: string | null = null;
      for (const c of node.children) {
        const problem = pathProblem(c.firstPath);
        if (problem) throw new MerkleInputError(`child firstPath: ${problem}`);
        if (prev !== null && comparePaths(prev, c.firstPath) >= 0) {
          throw new MerkleInputError(
            `children not strictly sorted at ${JSON.stringify(c.firstPath)}`,
          );
        }
        writeDirChild(nb, c.hash, c.count, utf8(c.firstPath));
        prev = c.firstPath;
      }
      return nb.finish();
    }
    default:
      throw new MerkleInputError(`unknown node type ${(node as { type: unknown }).type}`);
  }
}

function readHeader(bytes: Uint8Array): { kind: number; level: number; count: number } {
  if (!(bytes instanceof Uint8Array)) throw new MerkleDecodeError("node must be a Uint8Array");
  if (bytes.length > MAX_NODE_BYTES) {
    throw new MerkleDecodeError(`node of ${bytes.length} bytes exceeds ${MAX_NODE_BYTES}`);
  }
  if (bytes.length < HEADER_BYTES) {
    throw new MerkleDecodeError(`truncated node: ${bytes.length} bytes, header needs 5`);
  }
  if (bytes[0] !== FORMAT_VERSION) {
    throw new MerkleDecodeError(`unknown node format version ${bytes[0]}`);
  }
  const kind = bytes[1];
  if (kind !== FILE_NODE_KIND && kind !== DIR_NODE_KIND) {
    throw new MerkleDecodeError(`unknown node kind ${kind}`);
  }
  const level = bytes[2];
  if (level > MAX_LEVEL) throw new MerkleDecodeError(`node level ${level} exceeds ${MAX_LEVEL}`);
  const count = (bytes[3] << 8) | bytes[4];
  if (count > MAX_ENTRIES) {
    throw new MerkleDecodeError(`node has ${count} entries, more than ${MAX_ENTRIES}`);
  }
  if (count === 0 && level !== 0) throw new MerkleDecodeError("empty inner node");
  return { kind, level, count };
}

/**
 * The kind of a node ("file" or "dir") from its header alone, so a store can classify objects
 * without decoding them. Throws MerkleDecodeError if the header is not a valid node header.
 */
export function nodeKindOf(bytes: Uint8Array): "file" | "dir" {
  return readHeader(bytes).kind === FILE_NODE_KIND ? "file" : "dir";
}

function addSafe(total: number, v: number): number {
  const sum = total + v;
  if (sum > MAX_UVARINT) throw new MerkleDecodeError("node total exceeds 2^53-1");
  return sum;
}

function readPath(r: ByteReader, what: string): string {
  const len = r.uvarint(`${what} length`);
  if (len < 1 || len > MAX_PATH_BYTES) throw new MerkleDecodeError(`${what} length ${len}`);
  const s = fromUtf8(r.view(len, what));
  if (s === null) throw new MerkleDecodeError(`${what} is not valid UTF-8`);
  return s;
}

function readDirEntry(r: ByteReader): DirEntry {
  const path = readPath(r, "path");
  const problem = pathProblem(path);
  if (problem) {
    throw new MerkleDecodeError(`bad path ${JSON.stringify(path.slice(0, 200))}: ${problem}`);
  }
  const code = r.u8("entry kind");
  const kind = ENTRY_KINDS[code];
  if (kind === undefined) throw new MerkleDecodeError(`unknown entry kind ${code}`);
  let root: Hash;
  let size = 0;
  let target: string | undefined;
  if (kind === "file") {
    root = r.take(HASH_LENGTH, "file root");
    size = r.uvarint("file size");
  } else {
    root = EMPTY_FILE_ROOT.slice();
    if (kind === "symlink") {
      target = readPath(r, "symlink target");
      const t = targetProblem(target);
      if (t) throw new MerkleDecodeError(t);
      size = utf8(target).length;
    }
  }
  const mode = r.uvarint("mode");
  if (mode > MAX_MODE) throw new MerkleDecodeError(`mode ${mode} exceeds 0o7777`);
  const z = r.uvarint("mtime");
  const mtime = unzigzag(z);
  if (mtime < MIN_MTIME || mtime > MAX_MTIME) throw new MerkleDecodeError("mtime out of range");
  const e: DirEntry = { path, kind, root, size, mode, mtime };
  if (target !== undefined) e.target = target;
  return e;
}

/**
 * Decode node bytes, strictly: any deviation from the canonical layout (unknown version or
 * kind, truncation, trailing bytes, overlong varints, zero lengths, bad or unsorted paths,
 * oversize) throws MerkleDecodeError, so decodeNode(b) succeeds only when encodeNode would
 * give back exactly b.
 */
export function decodeNode(bytes: Uint8Array): MerkleNode {
  const { kind, level, count } = readHeader(bytes);
  const r = new ByteReader(bytes);
  r.pos = HEADER_BYTES;
  let node: MerkleNode;
  if (kind === FILE_NODE_KIND) {
    let size = 0;
    if (level === 0) {
      const chunks: ChunkRef[] = new Array(count);
      for (let i = 0; i < count; i++) {
        const hash = r.take(HASH_LENGTH, "chunk hash");
        const length = r.uvarint("chunk length");
        if (length < 1) throw new MerkleDecodeError("zero-length chunk");
        size = addSafe(size, length);
        chunks[i] = { hash, length };
      }
      node = { type: "file-leaf", level: 0, chunks, size };
    } else {
      const children: FileChildRef[] = new Array(count);
      for (let i = 0; i < count; i++) {
        const hash = r.take(HASH_LENGTH, "child hash");
        const childSize = r.uvarint("child size");
        if (childSize < 1) throw new MerkleDecodeError("child of zero bytes");
        size = addSafe(size, childSize);
        children[i] = { hash, size: childSize };
      }
      node = { type: "file-inner", level, children, size };
    }
  } else {
    let total = 0;
    let prev: string | null = null;
    if (level === 0) {
      const entries: DirEntry[] = new Array(count);
      for (let i = 0; i < count; i++) {
        const e = readDirEntry(r);
        if (prev !== null && comparePaths(prev, e.path) >= 0) {
          throw new MerkleDecodeError("dir entries not strictly sorted");
        }
        prev = e.path;
        entries[i] = e;
      }
      node = { type: "dir-leaf", level: 0, entries, count };
    } else {
      const children: DirChildRef[] = new Array(count);
      for (let i = 0; i < count; i++) {
        const hash = r.take(HASH_LENGTH, "child hash");
        const n = r.uvarint("child count");
        if (n < 1) throw new MerkleDecodeError("child of zero entries");
        total = addSafe(total, n);
        const firstPath = readPath(r, "child firstPath");
        const problem = pathProblem(firstPath);
        if (problem) throw new MerkleDecodeError(`bad child firstPath: ${problem}`);
        if (prev !== null && comparePaths(prev, firstPath) >= 0) {
          throw new MerkleDecodeError("dir children not strictly sorted");
        }
        prev = firstPath;
        children[i] = { hash, count: n, firstPath };
      }
      node = { type: "dir-inner", level, children, count: total };
    }
  }
  if (r.remaining !== 0) throw new MerkleDecodeError(`${r.remaining} trailing bytes after node`);
  return node;
}
