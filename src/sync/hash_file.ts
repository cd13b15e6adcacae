/**
 * Chunks one file and builds its Merkle tree, checking that the file did not change while it
 * was read. Runs in a scan worker (or inline): pure computation over one file, no database.
 */
import {
  type Chunk,
  chunkBuffer,
  type ChunkerOptions,
  chunkStream,
  type Hash,
  readPieces,
  rechunkStream,
} from "../chunk/mod.ts";
import { FileTreeBuilder } from "../merkle/mod.ts";
import { statFields } from "./walk.ts";

const READ_SIZE = 1 << 20;

/** The result of hashing one file. */
export interface HashedFile {
  size: number;
  mtime: number;
  mode: number;
  ino: number;
  root: Hash;
  /**
   * Every chunk, in order — unless the caller passed `onChunks`, which then received them in
   * batches and this list is empty (so memory does not grow with the file).
   */
  chunks: { offset: number; length: number; hash: Hash }[];
  /** Every Merkle node of the file's tree, as [hash, bytes]. */
  nodes: [Hash, Uint8Array][];
}

/** Why a file could not be hashed; `code` lets callers decide whether to retry. */
export class HashFileError extends Error {
  override name = "HashFileError";
  constructor(readonly code: "changed" | "unreadable" | "gone", message: string) {
    super(message);
  }
}

/**
 * Files up to this size are read whole with synchronous calls: for small files the cost of a
 * scan is per-call overhead, and a sync open/stat/read is several times cheaper than an async
 * one. Larger files stream through a reused buffer so memory stays flat.
 */
const SMALL_FILE_BYTES = 1 << 20;

/** Chunks handed to `onChunks` at a time. */
const CHUNK_BATCH = 4096;

/** Receives a file's chunks in order, a batch at a time, while the file is read. */
export type ChunkSink = (chunks: HashedFile["chunks"]) => void;

/**
 * Chunk and tree-hash the file at `absPath`; throws HashFileError. With `onChunks`, chunks are
 * delivered in batches as they are found and not kept, so memory stays flat for any file size.
 * `previous`, the chunks of the version this file replaces (cut with the same options), makes
 * re-chunking an edited large file cost little more than its SHA-256 (see rechunkStream); the
 * result is the same.
 */
export async function hashFile(
  absPath: string,
  options: Partial<ChunkerOptions> = {},
  onChunks?: ChunkSink,
  previous?: readonly Chunk[],
): Promise<HashedFile> {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(absPath, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new HashFileError("gone", "file disappeared");
    throw new HashFileError("unreadable", `cannot open: ${(e as Error).message}`);
  }
  let before: ReturnType<typeof statFields>;
  const kept: HashedFile["chunks"] = [];
  let pending: HashedFile["chunks"] = [];
  let read = 0;
  const nodes: HashedFile["nodes"] = [];
  const builder = new FileTreeBuilder({ put: (hash, bytes) => nodes.push([hash, bytes]) });
  const take = (c: HashedFile["chunks"][number]) => {
    read += c.length;
    builder.add(c.hash, c.length);
    if (!onChunks) return kept.push(c);
    pending.push(c);
    if (pending.length >= CHUNK_BATCH) {
      onChunks(pending);
      pending = [];
    }
  };
  try {
    before = statFields(file.statSync());
    if (before.size < SMALL_FILE_BYTES) {
      for (const c of chunkBuffer(readWholeSync(file, before.size), options)) take(c);
    } else {
      const chunks = previous && previous.length > 0
        ? rechunkStream((into) => file.read(into), previous, options)
        // Up to 1 MiB per read into one reused buffer amortizes each read's cost.
        : chunkStream(readPieces(file, new Uint8Array(READ_SIZE)), options);
      for await (const c of chunks) take(c);
    }
  } catch (e) {
    throw new HashFileError("unreadable", `read failed: ${(e as Error).message}`);
  } finally {
    file.close();
  }
  let after: ReturnType<typeof statFields>;
  try {
    after = statFields(Deno.statSync(absPath));
  } catch {
    throw new HashFileError("gone", "file disappeared while it was read");
  }
  if (
    read !== before.size || after.size !== before.size || after.mtime !== before.mtime ||
    after.ino !== before.ino
  ) {
    throw new HashFileError("changed", "file changed while it was read");
  }
  if (onChunks && pending.length > 0) onChunks(pending);
  const tree = builder.finish();
  return { ...before, root: tree.root, chunks: kept, nodes };
}

/**
 * The file's bytes, read with synchronous calls. Reads one byte past the expected size so a
 * file that grew is noticed (the caller compares the total with the size).
 */
function readWholeSync(file: Deno.FsFile, expected: number): Uint8Array {
  const buffer = new Uint8Array(expected + 1);
  let n = 0;
  while (n < buffer.length) {
    const got = file.readSync(buffer.subarray(n));
    if (got === null) break;
    n += got;
  }
  return buffer.subarray(0, n);
}
