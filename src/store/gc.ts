/**
 * Node-level garbage collection of the pack store, by two rules:
 *
 * - Held by the tree: the synced tree is the main chunk store (DESIGN.md, "Local data"): a
 *   chunk also held by a current file of the tree is redundant in the packs, and keeping both
 *   would double the disk use of the synced directory. That happens to every chunk a peer
 *   pushes before a commit, once the change is materialized.
 * - Unreferenced: with history, the packs also hold the chunks of replaced versions (see
 *   sync/preserve.ts). Once every version that needs an object has been pruned from the index,
 *   nothing will ever read it again: it is dropped, after a grace period (see liveness.ts).
 */
import type { Hash } from "../chunk/hash.ts";
import type { ChunkLocator } from "./locator.ts";
import { liveSet, unreferencedRule } from "./liveness.ts";
import type { NodeSource } from "../merkle/mod.ts";
import type {
  CompactOptions,
  CompactStats,
  DeadPredicate,
  PackedContext,
  PackStore,
} from "./packs.ts";

/** Default age below which an unreferenced object stays: pushes wait this long for a commit. */
export const DEFAULT_GC_GRACE_MS = 60 * 60 * 1000;

/** Rule names, as CompactStats.droppedBy counts them. */
export const HELD_BY_TREE = "held-by-tree";
export const UNREFERENCED = "unreferenced";

/** Options of collectGarbage. */
export interface GcOptions extends CompactOptions {
  /**
   * Objects to keep even though a rule finds them dead: for instance chunks pushed for a
   * change that is not materialized yet, whose durability must not depend on an unrelated
   * file that happens to hold the same bytes staying unchanged.
   */
  keep?: (hash: Hash) => boolean | Promise<boolean>;
  /**
   * The file roots of every retained version (heads and history: IndexState.retainedRoots).
   * Without it the unreferenced rule does not run and collection is by the tree rule only.
   */
  retainedRoots?: () => AsyncIterable<Hash>;
  /**
   * File roots that must stay readable although they may not be committed: the files now in
   * the tree as the last scan saw them (a local edit not uploaded yet). LocalStore passes them.
   */
  localRoots?: () => AsyncIterable<Hash>;
  /**
   * Where the tree nodes of retained versions are read (default: the packs). A node that never
   * saw some versions (it joined later, or was away) lacks their nodes and could never collect
   * by the unreferenced rule; the daemon passes a source that fetches them from peers.
   */
  nodes?: NodeSource;
  /** Unreferenced objects written less than this long ago stay (default 1 hour). */
  graceMs?: number;
  /** The time the run starts at, ms since the epoch (default Date.now(); for tests). */
  now?: number;
  /** Told why the unreferenced rule did not run, when it could not. */
  onSkip?: (reason: string) => void;
}

/** What collectGarbage did. */
export interface GcStats extends CompactStats {
  /** Objects dropped because a current file of the tree holds them. */
  droppedHeld: number;
  /** Objects dropped because no retained version, snapshot or current file needs them. */
  droppedUnreferenced: number;
  /**
   * Why the unreferenced rule did not run (no retainedRoots given, or a retained tree could
   * not be read), or null if it ran.
   */
  unreferencedSkipped: string | null;
}

/**
 * The tree rule: an object in the packs is dead iff it is a chunk that the locator places in
 * a file of the tree AND reading it there verifies now (the file really holds those bytes).
 * Merkle nodes have no location, so they stay; so does every chunk whose location is unknown,
 * stale or unreadable for any reason: when in doubt, keep.
 *
 * A file can still change after the check; the chunk is then gone locally, as any chunk of a
 * file edited behind FileSync's back is, and is fetched from a peer if it is needed again.
 * The materializer does not lose chunks this way: it pins what it preserves (store.pins).
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
 * Drop from the packs what the rules find dead and rewrite packs that are mostly dead
 * (PackStore.compact, which is crash-safe and may run while the store is being read and
 * written). The live set is computed before compaction starts, from the state at `now`.
 */
export async function collectGarbage(
  packs: PackStore,
  locator: ChunkLocator,
  opts: GcOptions = {},
): Promise<GcStats> {
  const {
    keep,
    retainedRoots,
    localRoots,
    graceMs = DEFAULT_GC_GRACE_MS,
    now = Date.now(),
    onSkip,
    nodes = packs,
    ...compactOpts
  } = opts;
  let unreferenced: DeadPredicate | null = null;
  let skipped: string | null = "no retained roots given";
  if (retainedRoots) {
    const live = await liveSet(nodes, [retainedRoots, ...(localRoots ? [localRoots] : [])]);
    skipped = live.complete ? null : live.reason;
    if (live.complete) unreferenced = unreferencedRule(packs, live, now - graceMs);
    else onSkip?.(live.reason);
  }
  const isDead = deadPredicate(heldByTree(locator), unreferenced, keep);
  const stats = await packs.compact(isDead, compactOpts);
  return {
    ...stats,
    droppedHeld: stats.droppedBy[HELD_BY_TREE] ?? 0,
    droppedUnreferenced: stats.droppedBy[UNREFERENCED] ?? 0,
    unreferencedSkipped: skipped,
  };
}

/** The rules combined: `keep` wins, then the unreferenced rule (cheap), then the tree rule. */
function deadPredicate(
  held: (hash: Hash) => Promise<boolean>,
  unreferenced: DeadPredicate | null,
  keep: GcOptions["keep"],
): DeadPredicate {
  return async (hash: Hash, where: PackedContext) => {
    if (keep && await keep(hash)) return false;
    if (unreferenced && await unreferenced(hash, where)) return UNREFERENCED;
    return await held(hash) ? HELD_BY_TREE : false;
  };
}
