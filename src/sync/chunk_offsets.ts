/**
 * A file version's chunks, for edits of that file: the scanner re-chunks the new content
 * guided by the old list (rechunkStream) and writes only the chunk locations an edit changed,
 * and the materializer assembles and records a new version from the previous one without a
 * locator lookup per chunk.
 */
import { type Chunk, type Hash, hashKey } from "../chunk/mod.ts";
import { type NodeSource, walkFileChunks } from "../merkle/mod.ts";

/** Most chunks of one file tracked at once (bounds memory: about a 16 GiB file). */
export const MAX_TRACKED_CHUNKS = 1 << 18;

/**
 * The chunks of the file tree at `root`, in order; null if the tree has more than
 * MAX_TRACKED_CHUNKS chunks or cannot be read.
 */
export async function chunkList(root: Hash, nodes: NodeSource): Promise<Chunk[] | null> {
  const out: Chunk[] = [];
  try {
    for await (const c of walkFileChunks(root, nodes)) {
      if (out.length >= MAX_TRACKED_CHUNKS) return null;
      out.push(c);
    }
  } catch {
    return null;
  }
  return out;
}

/** hashKey(chunk) -> offset of its last occurrence (as the locator records it). */
export function offsetsByHash(chunks: readonly Chunk[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const c of chunks) out.set(hashKey(c.hash), c.offset);
  return out;
}

/** offsetsByHash of the file tree at `root`, or null as chunkList. */
export async function chunkOffsets(
  root: Hash,
  nodes: NodeSource,
): Promise<Map<string, number> | null> {
  const list = await chunkList(root, nodes);
  return list === null ? null : offsetsByHash(list);
}
