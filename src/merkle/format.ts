/**
 * Node format version 1 and the tree-shaping parameters. Everything here is part of the
 * on-disk and on-wire format: changing any value changes every root hash, so it needs a new
 * FORMAT_VERSION.
 *
 * Layout of every node (all integers big-endian or LEB128 as noted):
 *
 *   u8  version   = 1
 *   u8  kind      = FILE_NODE_KIND | DIR_NODE_KIND
 *   u8  level     0 = leaf, k = holds references to level k-1 nodes
 *   u16 count     number of entries (0 only for the empty root, a level-0 node)
 *   entries, back to back, no padding, nothing after the last one
 *
 * File leaf entry:  hash[32] uvarint(length >= 1)                   (a chunk)
 * File inner entry: hash[32] uvarint(bytes below >= 1)              (a child node)
 * Dir leaf entry:   uvarint(pathLen) path  u8 type  ...type fields  uvarint(mode) zvarint(mtime)
 *                     type 0 file:    root[32] uvarint(size)
 *                     type 1 dir:     (nothing)
 *                     type 2 symlink: uvarint(targetLen) target
 * Dir inner entry:  hash[32] uvarint(entries below >= 1) uvarint(firstPathLen) firstPath
 *
 * uvarint is unsigned LEB128 in its shortest form, at most 2^53-1; zvarint is a zig-zag
 * uvarint. A hand-rolled layout rather than CBOR because canonical form is then a property of
 * the layout itself (one way to write each value, fixed field order, shortest varints enforced
 * by the decoder), not a promise we would have to extract from a general-purpose encoder; the
 * strict decoder is a few dozen lines; and a 64-entry chunk node is about 2.2 KiB, 35 bytes per
 * chunk.
 */

/** Current node format version (the first byte of every node). */
export const FORMAT_VERSION = 1;
/** Kind tag (second byte) of per-file chunk-tree nodes. */
export const FILE_NODE_KIND = 1;
/** Kind tag (second byte) of directory-tree nodes. */
export const DIR_NODE_KIND = 2;
/** The two kind tags, by name. */
export const NODE_KIND = Object.freeze({ file: FILE_NODE_KIND, dir: DIR_NODE_KIND } as const);

/** Bytes before the first entry: version, kind, level, u16 count. */
export const HEADER_BYTES = 5;
/**
 * Boundary mask: an entry ends its node when the first four bytes of its boundary hash, read
 * as a big-endian uint32, have these bits all zero. 63 gives an expected fan-out of 64.
 */
export const FANOUT_MASK = 63;
/** Hard cap on entries per node, so a run of entries without a boundary stays bounded. */
export const MAX_ENTRIES = 1024;
/**
 * A node also ends once it reaches this many bytes. Only directory nodes (long paths) can get
 * there; chunk nodes hit MAX_ENTRIES first (1024 x 40 bytes at most).
 */
export const SOFT_MAX_NODE_BYTES = 64 * 1024;
/** Longest path or symlink target stored, in UTF-8 bytes (Linux PATH_MAX). */
export const MAX_PATH_BYTES = 4096;
/**
 * No valid node is larger: the soft cap plus the largest possible entry (a symlink whose path
 * and target both have MAX_PATH_BYTES) fits well within it. The decoder refuses anything
 * bigger before parsing.
 */
export const MAX_NODE_BYTES = 96 * 1024;
/**
 * Highest level. Every node above the leaves has at least two entries except the last of its
 * level, so each level at least halves the one below: 2^63 chunks would be needed to get here.
 */
export const MAX_LEVEL = 63;
/** Largest mtime magnitude that zig-zag encoding keeps within safe integers. */
export const MAX_MTIME = 2 ** 52 - 1;
/** Smallest mtime. */
export const MIN_MTIME = -(2 ** 52);
/** Permission bits (and setuid/setgid/sticky) only: the type lives in the entry kind. */
export const MAX_MODE = 0o7777;

/** Whether a boundary hash ends a node (first four bytes, big-endian uint32, & FANOUT_MASK). */
export function isBoundaryHash(h: Uint8Array): boolean {
  // Only the low bits of byte 3 take part in `uint32 & 63`.
  return (h[3] & FANOUT_MASK) === 0;
}

/**
 * The close rule shared by both tree kinds, applied after each entry is appended. The first
 * entry of a node never closes it on its hash alone: that guarantees every level at least
 * halves, so the tree is shallow even for adversarial or repetitive input (a file of zeros has
 * one chunk hash repeated), and a boundary run resynchronises after one non-boundary entry.
 */
export function shouldCloseNode(count: number, nodeBytes: number, boundary: boolean): boolean {
  return (boundary && count >= 2) || count >= MAX_ENTRIES || nodeBytes >= SOFT_MAX_NODE_BYTES;
}
