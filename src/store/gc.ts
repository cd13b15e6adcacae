/**
 * Node-level garbage collection of the pack store. The synced tree is the main chunk store
 * (DESIGN.md, "Local data"): a chunk also held by a current file of the tree is redundant in
 * the packs, and keeping both would double the disk use of the synced directory. That happens
 * to every chunk a peer pushes before a commit, once the change is materialized.
 */
import type { Hash } from "../chunk/hash.ts";
import type { ChunkLocator } from "./locator.ts";
import type { CompactOptions, CompactStats, PackStore } from "./packs.ts";

/** Options of collectGarbage. */
export interface GcOptions extends CompactOptions {
  /**
   * Objects to keep even though a current file holds them: for instance chunks pushed for a
   * change that is not materialized yet, whose durability must not depend on an unrelated
   * file that happens to hold the same bytes staying unchanged.
   */
  keep?: (hash: Hash) => boolean | Promise<boolean>;
}

/**
 * The liveness rule of a node today: an object in the packs is dead iff it is a chunk that the
 * locator places in a file of the tree AND reading it there verifies now (the file really
 * holds those bytes). Merkle nodes have no location, so they stay; so does every chunk whose
 * location is unknown, stale or unreadable for any reason: when in doubt, keep.
 *
 * A file can still change after the check; the chunk is then gone locally, as any chunk of a
 * file edited behind FileSync's back is, and is fetched from a peer if it is needed again.
 */
export function heldByTree(locator: ChunkLocator): (hash: Hash) => Promise<boolean> {
  return async (hash) => {
    try {
      // Fresh: a cached handle could be of a file deleted since, whose old bytes still verify.
      return (await locator.read(hash, { fresh: true })) !== null;
    } catch {
      // StaleLocationError, or a read error: either way the tree is not a safe copy.
      return false;
    }
  };
}

/**
 * Drop from the packs every chunk a current file of the tree holds (see heldByTree) and
 * rewrite packs that are mostly dead (PackStore.compact, which is crash-safe and may run while
 * the store is being read and written).
 *
 * History retention (a later feature) will add live objects: chunks of retained versions and
 * snapshots must then stay in the packs even when a current file holds them, because that
 * file may change. That rule belongs here, in the predicate, not in compact().
 */
export function collectGarbage(
  packs: PackStore,
  locator: ChunkLocator,
  opts: GcOptions = {},
): Promise<CompactStats> {
  const held = heldByTree(locator);
  const { keep, ...compactOpts } = opts;
  const isDead = keep ? async (hash: Hash) => !(await keep(hash)) && await held(hash) : held;
  return packs.compact(isDead, compactOpts);
}
