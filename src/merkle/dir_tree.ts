/**
 * The directory tree: the local file index (path -> kind, root, size, mode, mtime) as a prolly
 * tree over paths sorted by comparePaths. Leaves hold entries; inner nodes hold references
 * with the entry count and first path below each, which makes lookups by path O(height).
 * Boundaries are decided by path hashes (tree_stack.ts: dirKeyIsBoundary), so the same set of
 * entries always gives the same tree and the shape depends only on the set of paths.
 */
import type { Hash } from "../chunk/mod.ts";
import { MerkleInputError, MerkleIntegrityError } from "./errors.ts";
import { DIR_NODE_KIND } from "./format.ts";
import { writeDirEntry } from "./node.ts";
import type { DirEntry, DirNode } from "./node.ts";
import { comparePaths } from "./paths.ts";
import { fetchDirNode } from "./source.ts";
import type { NodeSink, NodeSource } from "./source.ts";
import { dirKeyIsBoundary, TreeStack } from "./tree_stack.ts";

/** What building a directory tree produced. */
export interface DirTreeResult {
  /** Root node hash (EMPTY_DIR_ROOT for no entries). */
  root: Hash;
  /** Number of entries. */
  count: number;
}

/**
 * Streaming directory-tree builder: entries must arrive strictly sorted by comparePaths
 * (MerkleInputError otherwise, naming both paths); each is validated (DirEntry rules).
 */
export class DirTreeBuilder {
  readonly #stack: TreeStack;
  #prev: string | null = null;
  #count = 0;

  constructor(sink: NodeSink) {
    this.#stack = new TreeStack(DIR_NODE_KIND, sink);
  }

  add(entry: DirEntry): void {
    const leaf = this.#stack.leaf();
    const path = entry?.path;
    if (typeof path === "string" && this.#prev !== null && comparePaths(this.#prev, path) >= 0) {
      throw new MerkleInputError(
        `dir entries must be strictly sorted by path: ${JSON.stringify(path)} after ${
          JSON.stringify(this.#prev)
        }`,
      );
    }
    const key = writeDirEntry(leaf, entry);
    this.#prev = path;
    this.#count++;
    this.#stack.leafAdded(1, key, dirKeyIsBoundary(0, key));
  }

  /** Close the tree; the builder cannot be used afterwards. */
  finish(): DirTreeResult & { nodeCount: number } {
    const root = this.#stack.finish();
    return { root, count: this.#count, nodeCount: this.#stack.nodeCount };
  }
}

/** Build the tree of a sorted entry list (see DirTreeBuilder). */
export function buildDirTree(entries: Iterable<DirEntry>, sink: NodeSink): DirTreeResult {
  const builder = new DirTreeBuilder(sink);
  for (const e of entries) builder.add(e);
  const { root, count } = builder.finish();
  return { root, count };
}

function firstPathOf(node: DirNode): string | null {
  if (node.type === "dir-leaf") return node.entries.length ? node.entries[0].path : null;
  return node.children[0].firstPath;
}

/** Check what a parent says about a child against the child itself. */
export function checkDirChild(
  parent: DirNode,
  hash: Hash,
  claimed: { count: number; firstPath: string },
  child: DirNode,
): void {
  if (child.level !== parent.level - 1) {
    throw new MerkleIntegrityError(hash, `level ${child.level} under a level-${parent.level} node`);
  }
  if (child.count !== claimed.count) {
    throw new MerkleIntegrityError(
      hash,
      `holds ${child.count} entries, parent says ${claimed.count}`,
    );
  }
  if (firstPathOf(child) !== claimed.firstPath) {
    throw new MerkleIntegrityError(hash, "first path differs from its parent's separator");
  }
}

/**
 * The entries of a directory tree in path order, fetching each node once as the walk reaches
 * it. Nodes are verified and checked against their parents; the global order is checked too.
 */
export async function* walkDirTree(root: Hash, source: NodeSource): AsyncGenerator<DirEntry> {
  const stack: { hash: Hash; node: DirNode; next: number }[] = [
    { hash: root, node: await fetchDirNode(source, root), next: 0 },
  ];
  let prev: string | null = null;
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const node = top.node;
    if (node.type === "dir-leaf") {
      for (const e of node.entries) {
        if (prev !== null && comparePaths(prev, e.path) >= 0) {
          throw new MerkleIntegrityError(top.hash, "paths out of order across nodes");
        }
        prev = e.path;
        yield e;
      }
      stack.pop();
      continue;
    }
    if (top.next === node.children.length) {
      stack.pop();
      continue;
    }
    const ref = node.children[top.next++];
    const child = await fetchDirNode(source, ref.hash);
    checkDirChild(node, ref.hash, ref, child);
    stack.push({ hash: ref.hash, node: child, next: 0 });
  }
}

/** The entry for `path`, or null, fetching one node per level. */
export async function lookupDirEntry(
  root: Hash,
  path: string,
  source: NodeSource,
): Promise<DirEntry | null> {
  let node = await fetchDirNode(source, root);
  for (;;) {
    if (node.type === "dir-leaf") {
      let lo = 0;
      let hi = node.entries.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        const c = comparePaths(node.entries[mid].path, path);
        if (c === 0) return node.entries[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
      }
      return null;
    }
    // The last child whose first path is <= path is the only one that can hold it.
    let lo = 0;
    let hi = node.children.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (comparePaths(node.children[mid].firstPath, path) <= 0) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    if (found < 0) return null;
    const ref = node.children[found];
    const child = await fetchDirNode(source, ref.hash);
    checkDirChild(node, ref.hash, ref, child);
    node = child;
  }
}
