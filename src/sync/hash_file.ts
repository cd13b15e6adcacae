/**
 * Chunks one file and builds its Merkle tree, checking that the file did not change while it
 * was read. Runs in a scan worker (or inline): pure computation over one file, no database.
 */
import { type ChunkerOptions, chunkStream, type Hash, readPieces } from "../chunk/mod.ts";
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
  /** Every chunk, in order. */
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

/** Chunk and tree-hash the file at `absPath`; throws HashFileError. */
export async function hashFile(
  absPath: string,
  options: Partial<ChunkerOptions> = {},
): Promise<HashedFile> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(absPath, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new HashFileError("gone", "file disappeared");
    throw new HashFileError("unreadable", `cannot open: ${(e as Error).message}`);
  }
  let before: ReturnType<typeof statFields>;
  const chunks: HashedFile["chunks"] = [];
  const nodes: HashedFile["nodes"] = [];
  const builder = new FileTreeBuilder({ put: (hash, bytes) => nodes.push([hash, bytes]) });
  try {
    before = statFields(await file.stat());
    // 1 MiB reads into one reused buffer: large enough to amortize each read's cost.
    for await (const chunk of chunkStream(readPieces(file, new Uint8Array(READ_SIZE)), options)) {
      chunks.push(chunk);
      builder.add(chunk.hash, chunk.length);
    }
  } catch (e) {
    throw new HashFileError("unreadable", `read failed: ${(e as Error).message}`);
  } finally {
    file.close();
  }
  let after: ReturnType<typeof statFields>;
  try {
    after = statFields(await Deno.stat(absPath));
  } catch {
    throw new HashFileError("gone", "file disappeared while it was read");
  }
  const read = chunks.reduce((n, c) => n + c.length, 0);
  if (
    read !== before.size || after.size !== before.size || after.mtime !== before.mtime ||
    after.ino !== before.ino
  ) {
    throw new HashFileError("changed", "file changed while it was read");
  }
  const tree = builder.finish();
  return { ...before, root: tree.root, chunks, nodes };
}
