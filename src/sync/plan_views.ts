/**
 * The three views a sync pass plans from (see reconcile.ts): the local records, the synced
 * records and the committed index, kept in memory between passes and brought up to date from
 * what changed since the last pass, instead of read whole from Deno KV every pass.
 *
 * Reading them whole took about 0.5 s per pass with 20,000 files (reconcile itself: 25 ms), so
 * a one-file change took that long on each node before anything moved, and create-to-visible
 * on such a tree was over a second.
 *
 * How each view learns what changed:
 * - committed: from the index itself. Every applied version leaves a "ver" key per path it
 *   wrote, so the paths changed since the last load are listed exactly (`changedPaths`); what
 *   leaves no such key (a snapshot restored, tombstones pruned) bumps the index's
 *   `generation`, and the view is then read whole.
 * - local and synced: the sync engine is their only writer while the node runs (its scans,
 *   its writes to disk, its uploads), and it says which paths it touched (`touch`) or that
 *   any may have changed (`touchAll`, as a full rescan does). The next load reads those
 *   paths' records again, and everything below them for a tree touch.
 *
 * A full rescan reads everything again, so anything missed is corrected there at the latest;
 * `compareWithStore` lets tests (and FILESYNC_CHECK_VIEWS=1) check each load against a full
 * read.
 */
import type { IndexRecord, IndexState } from "../fsm/mod.ts";
import { ancestors } from "../fsm/mod.ts";
import type { FileIndex, LocalFileRecord } from "../store/mod.ts";
import type { SyncedRecord, SyncedState } from "./synced_state.ts";

/** What a pass plans from. The maps belong to PlanViews: read them, never change them. */
export interface Views {
  local: ReadonlyMap<string, LocalFileRecord>;
  synced: ReadonlyMap<string, SyncedRecord>;
  committed: ReadonlyMap<string, IndexRecord>;
  /** The applied index the committed view is as of. */
  at: number;
  /** The index generation it was read at (see IndexState.generation). */
  generation: number;
}

/** How much of a touched path is read again: its own records, or also all below it. */
type Reach = "own" | "tree";

/**
 * Beyond this share of the records (or this many) changed paths, a view is read whole instead:
 * a touched path costs four KV reads and a committed one two, a whole read about one per 100
 * records (20,000 paths one by one took 4 s, against 0.2 s for a whole read).
 */
const WHOLE_READ_SHARE = 1 / 16;
const WHOLE_READ_MIN = 256;

/** The local, synced and committed views of one node, kept up to date between passes. */
export class PlanViews {
  #local: Map<string, LocalFileRecord> | null = null;
  #synced: Map<string, SyncedRecord> | null = null;
  #committed: Map<string, IndexRecord> | null = null;
  /** The applied index and index generation the committed view was read at. */
  #at = 0;
  #generation = -1;
  /** Paths whose local and synced records the next load reads again. */
  #touched = new Map<string, Reach>();
  /** The next load reads the local and synced views whole. */
  #whole = true;

  constructor(
    private readonly files: FileIndex,
    private readonly syncedState: SyncedState,
    private readonly index: IndexState,
  ) {}

  /**
   * These paths' local or synced records may have changed: the next load reads them again,
   * with everything below them for "tree" (a scanned directory, a deleted one).
   */
  touch(paths: Iterable<string>, reach: Reach = "tree"): void {
    if (this.#whole) return;
    for (const path of paths) {
      if (this.#touched.get(path) !== "tree") this.#touched.set(path, reach);
    }
    if (this.#touched.size > this.#wholeReadBeyond()) this.touchAll();
  }

  /** Beyond how many changed paths a view is cheaper to read whole than path by path. */
  #wholeReadBeyond(): number {
    const size = Math.max(this.#local?.size ?? 0, this.#committed?.size ?? 0);
    return Math.max(WHOLE_READ_MIN, Math.floor(size * WHOLE_READ_SHARE));
  }

  /**
   * Anything may have changed (a full rescan; a check found the views out of step): the next
   * load reads every view whole, the committed one included.
   */
  touchAll(): void {
    this.#whole = true;
    this.#touched.clear();
    this.#committed = null;
  }

  /**
   * The views as the store holds them now. A load that fails leaves every view to be read
   * whole next time: it may have stopped half-way through bringing one up to date.
   */
  async load(): Promise<Views> {
    // Kept here, not read back from the fields: a touchAll() while the rest loads drops them.
    let committed: Views["committed"];
    try {
      committed = await this.#loadCommitted();
      if (this.#whole || this.#local === null || this.#synced === null) {
        // Cleared first: touches made while the reads run are kept for the next load.
        this.#whole = false;
        this.#touched.clear();
        this.#local = await this.files.loadAll();
        this.#synced = await this.syncedState.loadAll();
      } else if (this.#touched.size > 0) {
        const touched = this.#touched;
        this.#touched = new Map();
        await this.#reload(touched, this.#local, this.#synced);
      }
    } catch (e) {
      this.#local = this.#synced = null;
      this.touchAll();
      throw e;
    }
    return {
      local: this.#local,
      synced: this.#synced,
      committed,
      at: this.#at,
      generation: this.#generation,
    };
  }

  /** Bring the committed view to the applied index: changed paths only, unless told not to. */
  async #loadCommitted(): Promise<Map<string, IndexRecord>> {
    // Generation first: a restore that starts after it is seen by the next load.
    const generation = this.index.generation;
    const applied = await this.index.applied();
    // A restore may have set the applied index back (it clears it first): read whole then.
    const changed = this.#committed !== null && generation === this.#generation &&
        applied >= this.#at
      ? await this.index.changedPaths(this.#at, applied, this.#wholeReadBeyond())
      : null;
    let view = this.#committed;
    if (changed === null || view === null) {
      view = new Map<string, IndexRecord>();
      for await (const r of this.index.list({ tombstones: true, at: applied })) view.set(r.path, r);
    } else {
      for (const path of changed) {
        const rec = await this.index.get(path, { at: applied });
        if (rec) view.set(path, rec);
        else view.delete(path);
      }
    }
    this.#committed = view;
    this.#at = applied;
    this.#generation = generation;
    return view;
  }

  /** Read the touched paths' local and synced records again (and below them, for "tree"). */
  async #reload(
    touched: Map<string, Reach>,
    local: Map<string, LocalFileRecord>,
    synced: Map<string, SyncedRecord>,
  ): Promise<void> {
    // Records kept below a touched directory may be gone from the store: forget them all
    // first, in one sweep, and read back what is still there. A path no view holds is swept
    // too: records below a directory whose own record is missing (its event was lost) exist.
    const trees = [...touched].filter(([path, reach]) =>
      reach === "tree" && local.get(path)?.kind !== "file" && synced.get(path)?.kind !== "file"
    ).map(([path]) => path);
    if (trees.length > 0) {
      // A watcher batch touches a few paths: prefix tests beat building every key's ancestors.
      const prefixes = trees.map((t) => `${t}/`);
      const below = new Set(trees);
      const isBelow = prefixes.length <= 8
        ? (path: string) => prefixes.some((p) => path.startsWith(p))
        : (path: string) => ancestors(path).some((a) => below.has(a));
      for (const path of local.keys()) if (isBelow(path)) local.delete(path);
      for (const path of synced.keys()) if (isBelow(path)) synced.delete(path);
    }
    for (const [path, reach] of touched) {
      local.delete(path);
      synced.delete(path);
      if (reach === "tree") {
        for (const [p, rec] of await this.files.loadUnder([path])) local.set(p, rec);
        for (const [p, rec] of await this.syncedState.loadUnder([path])) synced.set(p, rec);
      } else {
        const own = await this.files.get(path);
        if (own) local.set(path, own);
        const ownSynced = await this.syncedState.get(path);
        if (ownSynced) synced.set(path, ownSynced);
      }
    }
  }
}

/** A path at which a view differs from the store. */
export interface ViewDifference {
  view: "local" | "synced" | "committed";
  path: string;
  problem: "missing" | "out of date" | "no longer stored";
}

/**
 * Where the views differ from a whole read of the store now (the committed index as of the
 * views' own applied index): for a check that incremental loads miss nothing.
 */
export async function compareWithStore(
  views: Views,
  files: FileIndex,
  syncedState: SyncedState,
  index: IndexState,
): Promise<ViewDifference[]> {
  const committed = new Map<string, IndexRecord>();
  for await (const r of index.list({ tombstones: true, at: views.at })) committed.set(r.path, r);
  // A prune or restore since the load changed records at or below views.at: not a miss.
  const comparable = index.generation === views.generation;
  return [
    ...differences("local", views.local, await files.loadAll()),
    ...differences("synced", views.synced, await syncedState.loadAll()),
    ...(comparable ? differences("committed", views.committed, committed) : []),
  ];
}

/** The paths at which two maps of records differ. */
function differences<T>(
  view: ViewDifference["view"],
  kept: ReadonlyMap<string, T>,
  stored: ReadonlyMap<string, T>,
): ViewDifference[] {
  const out: ViewDifference[] = [];
  for (const [path, rec] of stored) {
    const mine = kept.get(path);
    if (mine === undefined) out.push({ view, path, problem: "missing" });
    else if (!sameRecord(mine, rec)) out.push({ view, path, problem: "out of date" });
  }
  for (const path of kept.keys()) {
    if (!stored.has(path)) out.push({ view, path, problem: "no longer stored" });
  }
  return out;
}
/** Field-by-field equality of two plain records (byte arrays compared by content). */
function sameRecord(a: unknown, b: unknown): boolean {
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return a === b;
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every((k) =>
    sameRecord((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])
  );
}
