/**
 * Merkle trees of FileSync: the per-file chunk tree and the directory tree (both prolly trees
 * with content-defined node boundaries), their nodes as content-addressed objects, and diffs
 * that fetch only the nodes that differ through sources that may be remote. Knows nothing of
 * the network or of the disk: callers provide NodeSink / NodeSource.
 */
export {
  MerkleDecodeError,
  MerkleInputError,
  MerkleIntegrityError,
  MerkleMissingNodeError,
} from "./errors.ts";
export {
  DIR_NODE_KIND,
  FANOUT_MASK,
  FILE_NODE_KIND,
  FORMAT_VERSION,
  MAX_ENTRIES,
  MAX_LEVEL,
  MAX_NODE_BYTES,
  MAX_PATH_BYTES,
  NODE_KIND,
  SOFT_MAX_NODE_BYTES,
} from "./format.ts";
export {
  decodeNode,
  dirEntryProblem,
  EMPTY_DIR_NODE,
  EMPTY_DIR_ROOT,
  EMPTY_FILE_NODE,
  EMPTY_FILE_ROOT,
  encodeNode,
  nodeKindOf,
} from "./node.ts";
export type {
  ChunkRef,
  DirChildRef,
  DirEntry,
  DirEntryKind,
  DirInnerNode,
  DirLeafNode,
  DirNode,
  FileChildRef,
  FileInnerNode,
  FileLeafNode,
  FileNode,
  MerkleNode,
} from "./node.ts";
export { comparePaths, pathProblem } from "./paths.ts";
export { fetchDirNode, fetchFileNode, fetchNode, MemoryNodeStore } from "./source.ts";
export type { NodeSink, NodeSource } from "./source.ts";
export { buildFileTree, FileTreeBuilder, fileTreeSize, walkFileChunks } from "./file_tree.ts";
export type { FileChunk, FileTreeResult } from "./file_tree.ts";
export { buildDirTree, DirTreeBuilder, lookupDirEntry, walkDirTree } from "./dir_tree.ts";
export type { DirTreeResult } from "./dir_tree.ts";
export {
  DIFF_FETCH_CONCURRENCY,
  diffDirTrees,
  diffFileTrees,
  diffMissingNodes,
  diffTreeObjects,
} from "./diff.ts";
export type { DiffOptions, DirTreeDiff, TreeDiff } from "./diff.ts";
