/**
 * Where nodes come from and go to. Builders write to a synchronous NodeSink (the object store
 * batches them); readers and diff read through an async NodeSource that may be a local store
 * or, later, a peer. Sources are not trusted: every fetch goes through fetchNode, which checks
 * the bytes against the hash before decoding them.
 */
import { assertHash, hashEquals, hashKey, sha256, toHex } from "../chunk/mod.ts";
import type { Hash } from "../chunk/mod.ts";
import { MerkleDecodeError, MerkleIntegrityError, MerkleMissingNodeError } from "./errors.ts";
import {
  decodeNode,
  EMPTY_DIR_NODE,
  EMPTY_DIR_ROOT,
  EMPTY_FILE_NODE,
  EMPTY_FILE_ROOT,
} from "./node.ts";
import type { DirNode, FileNode, MerkleNode } from "./node.ts";

/** Receives every node a builder completes, once each time it completes one. */
export interface NodeSink {
  put(hash: Hash, bytes: Uint8Array): void;
}

/** Gives the bytes of a node by hash; rejects if it does not have it. Bytes are unverified. */
export interface NodeSource {
  getNode(hash: Hash): Promise<Uint8Array>;
}

/**
 * Fetch a node, check that SHA-256 of its bytes is `hash` (MerkleIntegrityError naming the
 * hash otherwise) and decode it (MerkleDecodeError naming the hash if the bytes, though they
 * hash right, are no valid node: e.g. a chunk hash passed where a node was expected).
 */
export async function fetchNode(source: NodeSource, hash: Hash): Promise<MerkleNode> {
  assertHash(hash, "node hash");
  // The empty roots are constants: no store needs to hold them.
  if (hashEquals(hash, EMPTY_FILE_ROOT)) return decodeNode(EMPTY_FILE_NODE);
  if (hashEquals(hash, EMPTY_DIR_ROOT)) return decodeNode(EMPTY_DIR_NODE);
  const bytes = await source.getNode(hash);
  if (!(bytes instanceof Uint8Array)) {
    throw new MerkleIntegrityError(hash, "source returned no bytes");
  }
  const actual = sha256(bytes);
  if (!hashEquals(actual, hash)) {
    throw new MerkleIntegrityError(hash, `bytes hash to ${toHex(actual)}`);
  }
  try {
    return decodeNode(bytes);
  } catch (e) {
    if (e instanceof MerkleDecodeError) {
      throw new MerkleDecodeError(`merkle node ${toHex(hash)}: ${e.message}`);
    }
    throw e;
  }
}

/** fetchNode, also requiring a file-tree node. */
export async function fetchFileNode(source: NodeSource, hash: Hash): Promise<FileNode> {
  const node = await fetchNode(source, hash);
  if (node.type !== "file-leaf" && node.type !== "file-inner") {
    throw new MerkleIntegrityError(hash, "expected a file-tree node, got a directory-tree node");
  }
  return node;
}

/** fetchNode, also requiring a directory-tree node. */
export async function fetchDirNode(source: NodeSource, hash: Hash): Promise<DirNode> {
  const node = await fetchNode(source, hash);
  if (node.type !== "dir-leaf" && node.type !== "dir-inner") {
    throw new MerkleIntegrityError(hash, "expected a directory-tree node, got a file-tree node");
  }
  return node;
}

/**
 * Nodes in memory: a sink and a source in one, for tests, tools and as a staging area. Counts
 * fetches so tests can check how many nodes an operation needed.
 */
export class MemoryNodeStore implements NodeSink, NodeSource {
  #nodes = new Map<string, { hash: Hash; bytes: Uint8Array }>();
  /** Number of getNode calls so far (hits and misses). */
  fetches = 0;
  /** Number of put calls so far (including repeats of a node already held). */
  puts = 0;

  /** Store a node as given; verification happens when it is fetched. */
  put(hash: Hash, bytes: Uint8Array): void {
    this.puts++;
    this.#nodes.set(hashKey(hash), { hash: hash.slice(), bytes });
  }

  getNode(hash: Hash): Promise<Uint8Array> {
    this.fetches++;
    const found = this.#nodes.get(hashKey(hash));
    if (!found) return Promise.reject(new MerkleMissingNodeError(hash));
    return Promise.resolve(found.bytes);
  }

  has(hash: Hash): boolean {
    return this.#nodes.has(hashKey(hash));
  }

  /** Number of distinct nodes held. */
  get size(): number {
    return this.#nodes.size;
  }

  /** The hashes of all nodes held. */
  *hashes(): IterableIterator<Hash> {
    for (const { hash } of this.#nodes.values()) yield hash.slice();
  }

  /** Zero the fetch and put counters. */
  resetCounters(): void {
    this.fetches = 0;
    this.puts = 0;
  }
}
