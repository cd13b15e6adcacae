/**
 * The per-file tree: leaves hold the file's chunk references in order, inner nodes hold
 * references to the level below with the number of file bytes under each. Node boundaries are
 * content-defined (format.ts), so an edit early in a file changes O(log n) nodes.
 */
import { HASH_LENGTH } from "../chunk/mod.ts";
import type { Hash } from "../chunk/mod.ts";
import { MerkleInputError, MerkleIntegrityError } from "./errors.ts";
import { FILE_NODE_KIND, isBoundaryHash } from "./format.ts";
import { writeChunkRef } from "./node.ts";
import type { FileNode } from "./node.ts";
import { fetchFileNode } from "./source.ts";
import type { NodeSink, NodeSource } from "./source.ts";
import { TreeStack } from "./tree_stack.ts";

/** What building a file tree produced. */
export interface FileTreeResult {
  /** Root node hash (EMPTY_FILE_ROOT for no chunks). */
  root: Hash;
  /** Sum of the chunk lengths: the file size. */
  size: number;
  /** Number of chunks added. */
  chunkCount: number;
  /** Number of nodes emitted to the sink (a node that occurs twice in the tree counts twice). */
  nodeCount: number;
}

/** One chunk of a file with its position, as walkFileChunks yields it. */
export interface FileChunk {
  hash: Hash;
  offset: number;
  length: number;
}

/**
 * Builds a file tree from the file's chunks in order, streaming: each node goes to the sink as
 * soon as it is complete, memory stays at one node buffer per level, and work is linear.
 * The hash bytes are copied on add, so the caller may reuse its buffer.
 */
export class FileTreeBuilder {
  readonly #stack: TreeStack;
  #size = 0;
  #chunks = 0;

  constructor(sink: NodeSink) {
    this.#stack = new TreeStack(FILE_NODE_KIND, sink);
  }

  /** Append the next chunk (length >= 1). */
  add(hash: Hash, length: number): void {
    const leaf = this.#stack.leaf();
    if (!(hash instanceof Uint8Array) || hash.length !== HASH_LENGTH) {
      throw new MerkleInputError(`chunk ${this.#chunks}: hash must be a 32-byte Uint8Array`);
    }
    if (!Number.isSafeInteger(length) || length < 1) {
      throw new MerkleInputError(`chunk ${this.#chunks}: length must be a positive integer`);
    }
    if (this.#size + length > Number.MAX_SAFE_INTEGER) {
      throw new MerkleInputError("file size exceeds 2^53-1 bytes");
    }
    writeChunkRef(leaf, hash, length);
    this.#size += length;
    this.#chunks++;
    this.#stack.leafAdded(length, null, isBoundaryHash(hash));
  }

  /** Close the tree; the builder cannot be used afterwards. */
  finish(): FileTreeResult {
    const root = this.#stack.finish();
    return {
      root,
      size: this.#size,
      chunkCount: this.#chunks,
      nodeCount: this.#stack.nodeCount,
    };
  }
}

/** Build the tree of a whole chunk list (see FileTreeBuilder). */
export function buildFileTree(
  chunks: Iterable<{ hash: Hash; length: number }>,
  sink: NodeSink,
): FileTreeResult {
  const builder = new FileTreeBuilder(sink);
  for (const c of chunks) builder.add(c.hash, c.length);
  return builder.finish();
}

/** Check what a parent says about a child against the child itself. */
export function checkFileChild(
  parent: FileNode,
  hash: Hash,
  claimedSize: number,
  child: FileNode,
): void {
  if (child.level !== parent.level - 1) {
    throw new MerkleIntegrityError(hash, `level ${child.level} under a level-${parent.level} node`);
  }
  if (child.size !== claimedSize) {
    throw new MerkleIntegrityError(hash, `holds ${child.size} bytes, parent says ${claimedSize}`);
  }
}

/**
 * The chunks of a file in order, with offsets, fetching each node once as the walk reaches it
 * (memory: one node per level). Every node is verified (fetchFileNode) and checked against its
 * parent's level and byte count, so a walk that completes has seen a consistent tree.
 */
export async function* walkFileChunks(
  root: Hash,
  source: NodeSource,
): AsyncGenerator<FileChunk> {
  const stack: { node: FileNode; next: number }[] = [
    { node: await fetchFileNode(source, root), next: 0 },
  ];
  let offset = 0;
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const node = top.node;
    if (node.type === "file-leaf") {
      for (const c of node.chunks) {
        yield { hash: c.hash, offset, length: c.length };
        offset += c.length;
      }
      stack.pop();
      continue;
    }
    if (top.next === node.children.length) {
      stack.pop();
      continue;
    }
    const ref = node.children[top.next++];
    const child = await fetchFileNode(source, ref.hash);
    checkFileChild(node, ref.hash, ref.size, child);
    stack.push({ node: child, next: 0 });
  }
}

/** File size recorded in a tree's root (one fetch). */
export async function fileTreeSize(root: Hash, source: NodeSource): Promise<number> {
  return (await fetchFileNode(source, root)).size;
}
