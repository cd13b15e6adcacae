/**
 * The streaming prolly-tree builder shared by file and directory trees. Level 0 receives
 * entries from the caller; whenever a node at level k closes (format.ts: shouldCloseNode) it
 * is emitted to the sink and a reference to it is appended to level k+1. Each entry is written
 * once into its level's buffer and each node is hashed once, so building is linear in the
 * number of entries, with memory bounded by one node buffer per level.
 *
 * Because a node closes after an entry chosen by that entry's own hash (or key), the levels
 * depend only on the sequence of entries, never on where it started: an edit changes the node
 * it lands in (and maybe its neighbour, when a boundary entry appears or disappears), the
 * sequence of node hashes above differs in one or two places, and so on up: O(height) nodes.
 */
import { HASH_LENGTH, Sha256, sha256 } from "../chunk/mod.ts";
import type { Hash } from "../chunk/mod.ts";
import { MerkleInputError } from "./errors.ts";
import {
  DIR_NODE_KIND,
  FILE_NODE_KIND,
  HEADER_BYTES,
  isBoundaryHash,
  shouldCloseNode,
} from "./format.ts";
import { NodeBuffer, writeDirChild, writeFileChild } from "./node.ts";
import type { NodeSink } from "./source.ts";

interface Level {
  node: NodeBuffer;
  /** Bytes (file tree) or entries (dir tree) below the node being built. */
  total: number;
  /** Dir trees: UTF-8 of the first path below the node being built. */
  firstKey: Uint8Array | null;
}

/**
 * Boundary of a directory-tree entry at `level`, decided by its key (the entry's path, or a
 * child's first path) and not its content: the shape of a directory tree then depends only on
 * the set of paths, so changing a file's metadata rewrites exactly the nodes on its path to
 * the root. The level is hashed in so each level draws fresh boundaries.
 */
export function dirKeyIsBoundary(level: number, key: Uint8Array): boolean {
  return isBoundaryHash(new Sha256().update(Uint8Array.of(level)).update(key).digest());
}

export class TreeStack {
  readonly #kind: number;
  readonly #sink: NodeSink;
  readonly #levels: Level[] = [];
  #done = false;
  /** Nodes emitted to the sink so far. */
  nodeCount = 0;

  constructor(kind: typeof FILE_NODE_KIND | typeof DIR_NODE_KIND, sink: NodeSink) {
    if (!sink || typeof sink.put !== "function") {
      throw new MerkleInputError("sink must have a put(hash, bytes) method");
    }
    this.#kind = kind;
    this.#sink = sink;
    this.#levels.push({ node: new NodeBuffer(kind, 0), total: 0, firstKey: null });
  }

  /** The level-0 node buffer, for the caller to append one entry to. */
  leaf(): NodeBuffer {
    if (this.#done) throw new MerkleInputError("tree builder already finished");
    return this.#levels[0].node;
  }

  /** Account for the entry just appended to the leaf and close the leaf if it ends here. */
  leafAdded(total: number, key: Uint8Array | null, boundary: boolean): void {
    const lvl = this.#levels[0];
    lvl.total += total;
    if (lvl.firstKey === null) lvl.firstKey = key;
    if (shouldCloseNode(lvl.node.count, lvl.node.pos, boundary)) this.#close(0);
  }

  #close(k: number): Hash {
    const lvl = this.#levels[k];
    const bytes = lvl.node.finish();
    const hash = sha256(bytes);
    this.#sink.put(hash, bytes);
    this.nodeCount++;
    const total = lvl.total;
    const firstKey = lvl.firstKey;
    lvl.total = 0;
    lvl.firstKey = null;
    this.#addChild(k + 1, hash, total, firstKey);
    return hash;
  }

  #addChild(k: number, hash: Hash, total: number, firstKey: Uint8Array | null): void {
    if (k === this.#levels.length) {
      this.#levels.push({ node: new NodeBuffer(this.#kind, k), total: 0, firstKey: null });
    }
    const lvl = this.#levels[k];
    let boundary: boolean;
    if (this.#kind === FILE_NODE_KIND) {
      writeFileChild(lvl.node, hash, total);
      boundary = isBoundaryHash(hash);
    } else {
      const key = firstKey as Uint8Array;
      writeDirChild(lvl.node, hash, total, key);
      if (lvl.firstKey === null) lvl.firstKey = key;
      boundary = dirKeyIsBoundary(k, key);
    }
    lvl.total += total;
    if (shouldCloseNode(lvl.node.count, lvl.node.pos, boundary)) this.#close(k);
  }

  /**
   * Close the open nodes bottom-up and return the root: the single node of the highest level.
   * A level holding one reference and nothing above it is not wrapped in another node: the
   * referenced node is the root. An empty tree's root is the empty level-0 node.
   */
  finish(): Hash {
    if (this.#done) throw new MerkleInputError("tree builder already finished");
    this.#done = true;
    for (let k = 0;; k++) {
      const lvl = this.#levels[k];
      const top = k === this.#levels.length - 1;
      if (top) {
        if (k > 0 && lvl.node.count === 1) {
          // The one reference of the top level is the root; it was emitted when it closed.
          return lvl.node.buf.slice(HEADER_BYTES, HEADER_BYTES + HASH_LENGTH);
        }
        const bytes = lvl.node.finish();
        const hash = sha256(bytes);
        this.#sink.put(hash, bytes);
        this.nodeCount++;
        return hash;
      }
      if (lvl.node.count > 0) this.#close(k);
    }
  }
}
