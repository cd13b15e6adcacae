/**
 * The unreferenced rule of garbage collection: which objects of the packs something may still
 * read, and which of the others are old enough to drop.
 *
 * Live: every object (tree nodes and chunks) of every file root given (retained versions of
 * the index, the files now in the tree), and every directory-tree node. Directory trees are
 * kept whole rather than walked from the snapshots and the last scan: several parts of the
 * node keep dir roots (snapshots, the last scan, a scan in progress), they are small next to
 * file content, and one missed reference would break a diff. The cost is that directory trees
 * of old scans are never reclaimed.
 *
 * Dead by this rule: not live AND in a sealed pack last written more than the grace period
 * before the run started. Pushed objects wait in the packs for their commit, which makes them
 * part of a retained version; until then nothing refers to them and only their age keeps them.
 */
import { type Hash, hashKey, toHex } from "../chunk/hash.ts";
import { fetchFileNode, nodeKindOf, type NodeSource } from "../merkle/mod.ts";
import type { DeadPredicate, PackedContext, PackStore } from "./packs.ts";

/** The objects that must stay, or why they could not all be found. */
export type LiveSet =
  | { complete: true; has(hash: Hash): boolean; size: number }
  | { complete: false; reason: string };

/**
 * Every object of the file trees whose roots `sources` yield, read from `nodes`. If a tree
 * cannot be read whole (a node missing or corrupt), the set is incomplete: what that version
 * needs cannot be told, so the caller must not drop anything by this rule.
 */
export async function liveSet(
  nodes: NodeSource,
  sources: readonly (() => AsyncIterable<Hash>)[],
): Promise<LiveSet> {
  const live = new Set<string>();
  for (const source of sources) {
    for await (const root of source()) {
      try {
        await markTree(root, nodes, live);
      } catch (e) {
        return {
          complete: false,
          reason: `tree of retained root ${toHex(root)} is not readable here: ${
            (e as Error).message
          }`,
        };
      }
    }
  }
  return { complete: true, has: (hash) => live.has(hashKey(hash)), size: live.size };
}

/**
 * Add the nodes and chunks of the file tree at `root` to `live`. A node already in the set
 * was walked with everything below it (versions of a file share most of their nodes), so
 * its subtree is skipped: a history of many versions costs about its distinct nodes.
 */
async function markTree(root: Hash, nodes: NodeSource, live: Set<string>): Promise<void> {
  const stack: Hash[] = [root];
  while (stack.length > 0) {
    const hash = stack.pop()!;
    const key = hashKey(hash);
    if (live.has(key)) continue;
    // Verified against its hash; the empty-file root is a constant no store holds.
    const node = await fetchFileNode(nodes, hash);
    if (node.type === "file-leaf") {
      for (const c of node.chunks) live.add(hashKey(c.hash));
    } else {
      for (const child of node.children) stack.push(child.hash);
    }
    // Marked after its children are queued; a failed fetch below leaves the run incomplete.
    live.add(key);
  }
}

/**
 * The predicate of the unreferenced rule: dead iff not in `live`, in a sealed pack last
 * written before `cutoff` (ms since the epoch), and not a directory-tree node.
 */
export function unreferencedRule(
  packs: PackStore,
  live: LiveSet & { complete: true },
  cutoff: number,
): DeadPredicate {
  return async (hash: Hash, where: PackedContext) => {
    if (live.has(hash) || !oldEnough(where, cutoff)) return false;
    return !(await isDirNode(packs, hash));
  };
}

/** Every object of the pack was written before `cutoff`; never so for the current pack. */
function oldEnough(where: PackedContext, cutoff: number): boolean {
  return !where.current && where.lastWrite < cutoff;
}

/**
 * Whether the object decodes as a directory-tree node header. A chunk whose first bytes happen
 * to look like one is kept: the error is on the safe side. Unreadable objects are kept too.
 */
async function isDirNode(packs: PackStore, hash: Hash): Promise<boolean> {
  let bytes: Uint8Array;
  try {
    bytes = await packs.get(hash);
  } catch {
    return true;
  }
  try {
    return nodeKindOf(bytes) === "dir";
  } catch {
    return false; // not a node at all: a chunk
  }
}
