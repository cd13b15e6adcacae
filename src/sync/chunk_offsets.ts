/**
 * A file version's chunks by offset, for edits of that file: the scanner writes only the chunk
 * locations an edit changed, and the materializer assembles and records a new version from the
 * previous one without a locator lookup per chunk.
 */
import { type Hash, hashKey } from "../chunk/mod.ts";
import { type NodeSource, walkFileChunks } from "../merkle/mod.ts";

/** Most chunks of one file tracked at once (bounds memory: about a 16 GiB file). */
export const MAX_TRACKED_CHUNKS = 1 << 18;

/**
 * hashKey(chunk) -> offset of its last occurrence (as the locator records it) in the file tree
 * at `root`; null if the tree has more than MAX_TRACKED_CHUNKS chunks or cannot be read.
 */
export async function chunkOffsets(
  root: Hash,
  nodes: NodeSource,
): Promise<Map<string, number> | null> {
  const out = new Map<string, number>();
  try {
    for await (const c of walkFileChunks(root, nodes)) {
      if (out.size >= MAX_TRACKED_CHUNKS) return null;
      out.set(hashKey(c.hash), c.offset);
    }
  } catch {
    return null;
  }
  return out;
}
