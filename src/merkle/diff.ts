/**
 * Diff of two trees of the same kind through node sources that may be remote, fetching only
 * nodes that differ.
 *
 * Algorithm (level-synchronised frontier descent). Each side keeps a frontier: an ordered,
 * duplicate-free list of node hashes still to compare, each with its level (known from the
 * node itself for the roots, and parent level - 1 for children). Repeat:
 *   1. Cancel: a hash on both frontiers names the same subtree on both sides (a hash fixes the
 *      bytes, the bytes fix the level), so it is dropped from both without being fetched.
 *   2. If the "want" frontier (the remote tree) is empty, stop: nothing of it is missing.
 *   3. Let L be the highest level on either frontier. If L is 0, fetch the remaining leaves of
 *      both sides and stop. Otherwise fetch the level-L nodes of both sides (concurrently, a
 *      few at a time per source) and replace each with its children, keeping order.
 * Expanding only the highest level keeps the two sides at the same level before they are
 * compared, so trees of different heights line up, and every subtree shared by both sides is
 * cancelled at its top without being fetched. An edit touching O(1) nodes per level costs
 * O(height) fetches per side. Every fetched node is verified (hash, kind, level, and what its
 * parent says about it).
 *
 * The remote nodes fetched are exactly the ones the local tree does not have at the same
 * place, and the remote leaves fetched hold every chunk the local side may lack. The chunk
 * answer is the distinct chunks of those leaves minus the chunks of the local leaves fetched
 * minus what `localHasChunk` reports. A chunk that the local tree holds only inside a subtree
 * shared with the remote (so it occurs twice in the remote file, once in a changed part) is
 * not seen by the diff and is reported as missing unless `localHasChunk` knows it: the answer
 * never misses a chunk, and it is exact when `localHasChunk` covers the local file's chunks
 * (as the chunk locator does) or when no chunk repeats within the remote file. Making it exact
 * otherwise would mean reading the whole local tree, which is what the diff exists to avoid.
 */
import type { Hash } from "../chunk/mod.ts";
import { hashEquals, hashKey } from "../chunk/mod.ts";
import { checkDirChild } from "./dir_tree.ts";
import { MerkleIntegrityError } from "./errors.ts";
import { checkFileChild } from "./file_tree.ts";
import { MAX_LEVEL } from "./format.ts";
import type { DirEntry, DirLeafNode, FileLeafNode, MerkleNode } from "./node.ts";
import { comparePaths } from "./paths.ts";
import { fetchNode } from "./source.ts";
import type { NodeSource } from "./source.ts";
import { mapLimit } from "../util/mod.ts";

/** Fetches in flight per source during a diff: enough to hide a peer's latency. */
export const DIFF_FETCH_CONCURRENCY = 16;

/** What the remote tree has that the local side lacks. */
export interface TreeDiff {
  /** Remote node hashes the local tree lacks, top-down, each once. */
  nodes: Hash[];
  /** Distinct remote chunk hashes the local side lacks, in file order (file trees only). */
  chunks: Hash[];
}

/** Extra knowledge of the local side, to answer beyond what its tree holds. */
export interface DiffOptions {
  /** True if the local side holds this chunk anyway (e.g. the chunk locator knows it). */
  localHasChunk?: (hash: Hash) => boolean | Promise<boolean>;
  /**
   * True if the local side holds this node anyway (e.g. its object store has it). Only filters
   * `nodes`; the descent still goes below it, since a store holding a node need not hold all of
   * its subtree.
   */
  localHasNode?: (hash: Hash) => boolean | Promise<boolean>;
}

/** Added, removed and changed paths between two directory trees, each sorted by path. */
export interface DirTreeDiff {
  added: string[];
  removed: string[];
  changed: string[];
}

type TreeKind = "file" | "dir";

interface Item {
  hash: Hash;
  key: string;
  level: number;
  node: MerkleNode | null;
  /** Verifies a fetched node against what its parent says about it (children only). */
  check: ((node: MerkleNode) => void) | null;
}

interface Frontiers {
  haveLeaves: MerkleNode[];
  wantLeaves: MerkleNode[];
  wantNodes: Hash[];
}

function kindOf(node: MerkleNode): TreeKind {
  return node.type === "file-leaf" || node.type === "file-inner" ? "file" : "dir";
}

async function load(items: Item[], source: NodeSource, kind: TreeKind | null): Promise<void> {
  await mapLimit(items.filter((i) => i.node === null), DIFF_FETCH_CONCURRENCY, async (item) => {
    const node = await fetchNode(source, item.hash);
    if (kind !== null && kindOf(node) !== kind) {
      throw new MerkleIntegrityError(item.hash, `expected a ${kind}-tree node`);
    }
    if (item.level >= 0 && node.level !== item.level) {
      throw new MerkleIntegrityError(item.hash, `level ${node.level}, expected ${item.level}`);
    }
    item.check?.(node);
    item.node = node;
    item.level = node.level;
  });
}

function childrenOf(item: Item): Item[] {
  const parent = item.node as MerkleNode;
  const level = parent.level - 1;
  switch (parent.type) {
    case "file-inner":
      return parent.children.map((c) => ({
        hash: c.hash,
        key: hashKey(c.hash),
        level,
        node: null,
        check: (n: MerkleNode) => {
          if (n.type !== "file-leaf" && n.type !== "file-inner") {
            throw new MerkleIntegrityError(c.hash, "expected a file-tree node");
          }
          checkFileChild(parent, c.hash, c.size, n);
        },
      }));
    case "dir-inner":
      return parent.children.map((c) => ({
        hash: c.hash,
        key: hashKey(c.hash),
        level,
        node: null,
        check: (n: MerkleNode) => {
          if (n.type !== "dir-leaf" && n.type !== "dir-inner") {
            throw new MerkleIntegrityError(c.hash, "expected a directory-tree node");
          }
          checkDirChild(parent, c.hash, c, n);
        },
      }));
    default:
      return [];
  }
}

/** Replace the level-L items by their (loaded) children, keeping order and dropping repeats. */
function expand(front: Item[], level: number): Item[] {
  const seen = new Set<string>();
  const out: Item[] = [];
  for (const item of front) {
    const next = item.level === level ? childrenOf(item) : [item];
    for (const n of next) {
      if (seen.has(n.key)) continue;
      seen.add(n.key);
      out.push(n);
    }
  }
  return out;
}

/** The frontier descent described at the top of this file. */
async function descend(
  have: Hash | null,
  want: Hash,
  haveSource: NodeSource,
  wantSource: NodeSource,
  kind: TreeKind | null,
): Promise<Frontiers> {
  const out: Frontiers = { haveLeaves: [], wantLeaves: [], wantNodes: [] };
  if (have !== null && hashEquals(have, want)) return out;
  const root = (hash: Hash): Item => ({
    hash,
    key: hashKey(hash),
    level: -1,
    node: null,
    check: null,
  });
  let wantFront = [root(want)];
  let haveFront = have === null ? [] : [root(have)];
  await load(wantFront, wantSource, kind);
  kind ??= kindOf(wantFront[0].node as MerkleNode);
  await load(haveFront, haveSource, kind);
  // Each round lowers the highest level by one; the roots' levels bound the rounds.
  for (let round = 0; round <= MAX_LEVEL; round++) {
    const haveKeys = new Set(haveFront.map((i) => i.key));
    const shared = new Set(wantFront.filter((i) => haveKeys.has(i.key)).map((i) => i.key));
    if (shared.size > 0) {
      wantFront = wantFront.filter((i) => !shared.has(i.key));
      haveFront = haveFront.filter((i) => !shared.has(i.key));
    }
    if (wantFront.length === 0) return out;
    let top = 0;
    for (const i of wantFront) if (i.level > top) top = i.level;
    for (const i of haveFront) if (i.level > top) top = i.level;
    const haveTop = haveFront.filter((i) => i.level === top);
    const wantTop = wantFront.filter((i) => i.level === top);
    await Promise.all([load(haveTop, haveSource, kind), load(wantTop, wantSource, kind)]);
    for (const i of wantTop) out.wantNodes.push(i.hash);
    if (top === 0) {
      out.haveLeaves = haveFront.map((i) => i.node as MerkleNode);
      out.wantLeaves = wantFront.map((i) => i.node as MerkleNode);
      return out;
    }
    haveFront = expand(haveFront, top);
    wantFront = expand(wantFront, top);
  }
  throw new MerkleIntegrityError(want, "diff did not reach the leaves");
}

async function filterAsync(
  hashes: Hash[],
  has: ((hash: Hash) => boolean | Promise<boolean>) | undefined,
): Promise<Hash[]> {
  if (!has) return hashes;
  const out: Hash[] = [];
  for (const h of hashes) {
    let r = has(h);
    if (typeof r !== "boolean") r = await r;
    if (!r) out.push(h);
  }
  return out;
}

function missingChunks(f: Frontiers): Hash[] {
  const seen = new Set<string>();
  for (const leaf of f.haveLeaves) {
    for (const c of (leaf as FileLeafNode).chunks) seen.add(hashKey(c.hash));
  }
  const out: Hash[] = [];
  for (const leaf of f.wantLeaves) {
    for (const c of (leaf as FileLeafNode).chunks) {
      const k = hashKey(c.hash);
      if (seen.has(k)) continue;
      seen.add(k);
      out.push(c.hash);
    }
  }
  return out;
}

/**
 * Nodes and chunks of the remote tree that the local side lacks; `local` null means the local
 * side has no version at all (everything is missing). Both roots must be of the same kind;
 * for directory trees `chunks` is empty (their leaves name file roots, not chunks).
 */
export async function diffTreeObjects(
  local: Hash | null,
  remote: Hash,
  localSource: NodeSource,
  remoteSource: NodeSource,
  options: DiffOptions = {},
): Promise<TreeDiff> {
  const f = await descend(local, remote, localSource, remoteSource, null);
  const isFile = f.wantLeaves.length > 0 && f.wantLeaves[0].type === "file-leaf";
  return {
    nodes: await filterAsync(f.wantNodes, options.localHasNode),
    chunks: isFile ? await filterAsync(missingChunks(f), options.localHasChunk) : [],
  };
}

/**
 * The distinct chunk hashes of the remote file that the local side lacks: not in the local
 * tree (see the note at the top of this file on chunks repeated inside the remote file) and
 * not reported by `localHasChunk`. In remote file order. Fetches only differing nodes.
 */
export async function diffFileTrees(
  local: Hash | null,
  remote: Hash,
  localSource: NodeSource,
  remoteSource: NodeSource,
  localHasChunk?: (h: Hash) => boolean | Promise<boolean>,
): Promise<Hash[]> {
  const f = await descend(local, remote, localSource, remoteSource, "file");
  return await filterAsync(missingChunks(f), localHasChunk);
}

/**
 * The remote tree's nodes that the local tree lacks (and `localHasNode` does not report),
 * top-down: what to send so the other side can read the whole remote tree. Either tree kind.
 */
export async function diffMissingNodes(
  local: Hash | null,
  remote: Hash,
  localSource: NodeSource,
  remoteSource: NodeSource,
  localHasNode?: (h: Hash) => boolean | Promise<boolean>,
): Promise<Hash[]> {
  const f = await descend(local, remote, localSource, remoteSource, null);
  return await filterAsync(f.wantNodes, localHasNode);
}

function sameEntry(a: DirEntry, b: DirEntry): boolean {
  return a.kind === b.kind && hashEquals(a.root, b.root) && a.size === b.size &&
    a.mode === b.mode && a.mtime === b.mtime && a.target === b.target;
}

/**
 * Paths added, removed and changed (any field differs) going from directory tree `a` to `b`,
 * fetching only nodes that differ (`bSource` defaults to `source`). Exact: a path occurs once
 * per tree, so a path in a subtree both trees share is in neither changed part.
 */
export async function diffDirTrees(
  a: Hash,
  b: Hash,
  source: NodeSource,
  bSource: NodeSource = source,
): Promise<DirTreeDiff> {
  const f = await descend(a, b, source, bSource, "dir");
  const before = new Map<string, DirEntry>();
  for (const leaf of f.haveLeaves) {
    for (const e of (leaf as DirLeafNode).entries) before.set(e.path, e);
  }
  const added: string[] = [];
  const changed: string[] = [];
  for (const leaf of f.wantLeaves) {
    for (const e of (leaf as DirLeafNode).entries) {
      const old = before.get(e.path);
      if (old === undefined) {
        added.push(e.path);
      } else {
        if (!sameEntry(old, e)) changed.push(e.path);
        before.delete(e.path);
      }
    }
  }
  const removed = [...before.keys()];
  return {
    added: added.sort(comparePaths),
    removed: removed.sort(comparePaths),
    changed: changed.sort(comparePaths),
  };
}
