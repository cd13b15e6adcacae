/**
 * The sync engine of one node: it keeps the directory and the cluster's committed index in
 * step. Each pass scans the tree (re-reading only changed files), plans with reconcile(), and
 * then
 *   1. adopts paths whose disk content already equals the committed entry,
 *   2. keeps both-sides-changed paths as conflict copies and writes the committed entry,
 *   3. writes every newer committed entry to disk (fetching missing chunks from peers),
 *   4. proposes local changes through Raft, each based on the version it was synced at
 *      (compare-and-swap), and records what was committed.
 * A proposal that fails (no quorum, or someone else committed first) changes nothing locally:
 * the edit stays on disk, differs from the synced record, and is planned again next pass,
 * either as a retry or, once the other version is visible, as a conflict copy. No edit is
 * ever dropped.
 *
 * Passes run one at a time; a request during a pass schedules exactly one more. They are
 * triggered by file system events (watcher), by newly committed entries, and by a periodic
 * rescan as a safety net for missed events.
 */
import type { Hash } from "../chunk/mod.ts";
import {
  ancestors,
  type ApplyResult,
  type Command,
  type FileOp,
  type IndexRecord,
  type IndexState,
} from "../fsm/mod.ts";
import type { NodeSource } from "../merkle/mod.ts";
import { KvBatch, type LocalFileRecord, type LocalStore } from "../store/mod.ts";
import { PartialChunks, type Stripe, stripeFor } from "./partial_chunks.ts";
import { Limiter, mapLimit } from "../util/mod.ts";
import {
  DIR_NOT_EMPTY,
  keepConflictCopy,
  materialize,
  type MaterializeSources,
  sweepTempFiles,
  WriteGroup,
} from "./materializer.ts";
import { compareWithStore, PlanViews, type Views } from "./plan_views.ts";
import { reconcile, type SyncPlan } from "./reconcile.ts";
import { objectsOfOps } from "./replicate.ts";
import {
  isPrefetchable,
  PREFETCH_MAX_FILE_BYTES,
  PrefetchedObjects,
  prefetchObjects,
  type PrefetchShare,
} from "./prefetch.ts";
import { writeBatches } from "./batch_writer.ts";
import { type BackgroundScan, scanPaths, scanTree } from "./scanner.ts";
import { type SyncedRecord, SyncedState } from "./synced_state.ts";
import { PendingProposals } from "./pending_proposals.ts";
import { type WatchBatch, Watcher } from "./watcher.ts";
import type { Logger } from "./log.ts";

/** Where objects this node lacks come from (the daemon adapts the network). */
export interface RemoteObjects {
  /**
   * Fetch objects by hash from peers; each arrives verified through `onObject`. `preferred`
   * peers (the node that committed the content holds it) are asked first, the rest after;
   * for a large fetch the daemon may ask every member at once instead, unless `strictly`:
   * then the preferred peers are asked first, and the others only for what they lack.
   */
  fetch(
    hashes: Hash[],
    onObject: (hash: Hash, bytes: Uint8Array) => Promise<void>,
    preferred?: string[],
    strictly?: boolean,
    /** Aborting it ends the fetch with an error (what arrived was delivered). */
    signal?: AbortSignal,
  ): Promise<{ missing: Hash[] }>;
}

/** What the engine needs from the rest of the node. */
export interface EngineDeps {
  store: LocalStore;
  index: IndexState;
  propose(command: Command): Promise<ApplyResult>;
  /** This node's id (conflict copies are named after it). */
  nodeId: string;
  remote: RemoteObjects;
  /**
   * Make the objects durable on enough peers that, with this node, a majority of voters holds
   * them; rejects if that is not possible now. Absent: nothing is pushed (a test harness).
   */
  replicate?(hashes: Hash[]): Promise<void>;
  /**
   * Whether replicate() has anything to do now (false: this node alone is a majority of the
   * voters); saves listing every object of an upload for nothing. Absent: assumed true.
   */
  replicationNeeded?(): boolean;
  /**
   * The cluster's members now, this node included. With three or more, members fetching the
   * same large file each fetch their own stripe of it first (see partial_chunks.ts). Absent:
   * this node fetches alone.
   */
  members?(): string[];
  log: Logger;
}

/** Options of the engine. */
export interface EngineOptions {
  /**
   * Safety-net rescan period, ms (default 10,000): the shortest one. A rescan of a large tree
   * is spaced further, so that it takes at most 1/RESCAN_DUTY of the time (see #rescanSoon).
   */
  rescanMs?: number;
  /** Watch the directory for changes (default true). */
  watch?: boolean;
  /**
   * Check every pass's views against a whole read of the store and log an error where they
   * differ (then plan from the whole read). For tests: it costs what the views save.
   */
  checkViews?: boolean;
  /**
   * New or changed files from this size are hashed in the background when a scan has other
   * files to hash (default 64 MiB; see ScanOptions.backgroundBytes).
   */
  backgroundHashBytes?: number;
}

/** What one pass did. */
export interface PassResult {
  uploaded: number;
  materialized: number;
  conflicts: number;
  /** Ops that could not be committed this pass (kept for the next one). */
  pendingUp: number;
  /** Bytes of the files among pendingUp. */
  pendingUpBytes: number;
  /** Committed entries not yet on disk (a local change in the way, or a fetch failure). */
  pendingDown: number;
  /** Bytes of the files among pendingDown. */
  pendingDownBytes: number;
  /** Why local changes wait, as the last failure said (null when none waits for a failure). */
  waitingUp?: string | null;
  /** Why committed changes are not written yet, likewise (a fetch or the disk failed). */
  waitingDown?: string | null;
  /**
   * The applied index of the committed view the pass planned from: with nothing pending down
   * and no write in flight, the disk holds everything committed up to it.
   */
  plannedAt?: number;
}

/**
 * The safety-net rescan (every file stat'ed, every record read and planned) is spaced at least
 * this many times its own duration: with 20,000 files a rescan and its planning took about
 * 1.7 CPU-seconds, so every 10 s an idle node used 17 % of a core; now at most about 1 %.
 * The duration is taken from rescans that read no file content (hashing new files is not the
 * rescan's own cost), and the spacing stops at RESCAN_MAX_MS.
 */
const RESCAN_DUTY = 100;
const RESCAN_MAX_MS = 5 * 60_000;
/** A reason changes wait is warned about again after this long, if it still holds. */
const WAIT_WARN_INTERVAL_MS = 60_000;

/** Ops proposed together; a rejected batch is retried op by op. */
const UPLOAD_BATCH = 64;
/** Content bytes per command at most (one larger file goes alone). */
const UPLOAD_BATCH_BYTES = 16 << 20;
/** Proposals in flight at once during an upload. */
const UPLOAD_CONCURRENCY = 16;
/** Reported paths kept for the next pass's scan; beyond this it scans the whole tree. */
const MAX_CHANGED_PATHS = 10_000;
/** Small files written at once by a pass. */
const MATERIALIZE_CONCURRENCY = 8;
/**
 * Files over PREFETCH_MAX_FILE_BYTES written in the background at once. A file of a few MiB
 * waits on round trips (its tree, where its chunks are) as much as on bytes, so several
 * overlap: on the anchor workload, 8 at once instead of 2 took B's write of it from 3.3 s to
 * 2.9 s (tmpfs, 3 runs each).
 */
const BACKGROUND_WRITES = 8;
/**
 * Of those, files over HUGE_FILE_BYTES at once: one such file keeps the fetch streams busy by
 * itself, and each holds up to a fetch window of bytes in memory.
 */
const HUGE_FILE_WRITES = 2;
const HUGE_FILE_BYTES = 64 << 20;
/** Small files whose objects are fetched ahead together: at most this many, or bytes. */
const PREFETCH_BATCH_FILES = 256;
const PREFETCH_BATCH_BYTES = 32 << 20;

/** Whether a committed entry is written in the background (see SyncEngine.#inflight). */
function writtenInBackground(rec: IndexRecord): boolean {
  return !rec.deleted && rec.kind === "file" && rec.size > PREFETCH_MAX_FILE_BYTES;
}

/** The sizes of `entries` added up. */
function totalSize(entries: Iterable<{ size: number }>): number {
  let n = 0;
  for (const { size } of entries) n += size;
  return n;
}

/** Content bytes an op makes durable before its commit. */
function opBytes(op: FileOp): number {
  return op.op === "put" ? op.size : 0;
}

/**
 * One wave's ops in commands: those without content (directories, deletes, renames, empty
 * files) in commands of their own, then files from the smallest, at most UPLOAD_BATCH ops and
 * UPLOAD_BATCH_BYTES per command. Ops of later waves wait only for the commands holding what
 * they depend on (see #upload), so a directory must not share a command with a file whose
 * push takes long.
 */
function uploadBatches(wave: FileOp[]): FileOp[][] {
  const ordered = [...wave].sort((a, b) => opBytes(a) - opBytes(b)); // stable
  const out: FileOp[][] = [];
  let batch: FileOp[] = [];
  let bytes = 0;
  for (const op of ordered) {
    const n = opBytes(op);
    const full = batch.length >= UPLOAD_BATCH ||
      (batch.length > 0 && bytes + n > UPLOAD_BATCH_BYTES);
    if (full || (n > 0 && batch.length > 0 && bytes === 0)) {
      out.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(op);
    bytes += n;
  }
  if (batch.length > 0) out.push(batch);
  return out;
}

/** The paths an op touches. */
function opPaths(op: FileOp): string[] {
  return op.op === "rename" ? [op.from, op.to] : [op.path];
}

/** Split small files into prefetch batches bounded in count and bytes (memory). */
function* prefetchBatches(records: IndexRecord[]): Generator<IndexRecord[]> {
  let batch: IndexRecord[] = [];
  let bytes = 0;
  for (const r of records) {
    if (batch.length >= PREFETCH_BATCH_FILES || bytes + r.size > PREFETCH_BATCH_BYTES) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(r);
    bytes += r.size;
  }
  if (batch.length > 0) yield batch;
}

/**
 * `records` reordered to take one file from each directory in turn (order within a directory
 * kept). Files written at once then mostly sit in different directories: creating a file and
 * renaming it into place lock its directory, and so does looking up a name that is not there
 * yet, so eight writes into one directory queued on that lock, main-thread lookups included
 * (file creation costs up to 0.8 ms of kernel time on this machine's /tmp).
 */
export function spreadOverDirectories<T extends { path: string }>(records: T[]): T[] {
  const byDir = new Map<string, T[]>();
  for (const r of records) {
    const dir = r.path.slice(0, Math.max(0, r.path.lastIndexOf("/")));
    let list = byDir.get(dir);
    if (list === undefined) byDir.set(dir, list = []);
    list.push(r);
  }
  const lists = [...byDir.values()];
  const out: T[] = [];
  for (let i = 0; out.length < records.length; i++) {
    for (const list of lists) if (i < list.length) out.push(list[i]);
  }
  return out;
}

/** A short, file-name-safe name for this node in conflict copies. */
function shortNodeName(nodeId: string): string {
  return nodeId.slice(-8);
}

/**
 * The plan's writes in phases, each phase's writes independent of one another:
 *  1. tombstones that are in the way of a live entry, and directory tombstones (children
 *     first, as the plan orders them), one at a time;
 *  2. live directories, parents first, one at a time;
 *  3. live files and symlinks, concurrently (their parents exist after phase 2);
 *  4. the remaining file tombstones. A rename arrives as a tombstone plus a new entry with the
 *     same content, and the content's chunks are still in the old file until it is deleted,
 *     so writing the new entry first moves no data.
 */
export function writePhases(records: IndexRecord[]): {
  serial: IndexRecord[];
  concurrent: IndexRecord[];
  last: IndexRecord[];
} {
  const live = records.filter((r) => !r.deleted);
  const inTheWay = (t: IndexRecord) =>
    live.some((r) => r.path === t.path || r.path.startsWith(`${t.path}/`));
  const early = records.filter((r) => r.deleted && (r.kind === "dir" || inTheWay(r)));
  const last = records.filter((r) => r.deleted && !early.includes(r));
  return {
    serial: [...early, ...live.filter((r) => r.kind === "dir")],
    concurrent: live.filter((r) => r.kind !== "dir"),
    last,
  };
}

/** Keeps one node's directory and the committed index in step. */
export class SyncEngine {
  #watcher: Watcher | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** The retry of changes still waiting (see #retrySoon). */
  #retry: ReturnType<typeof setTimeout> | undefined;
  /** How long the last full rescan and its planning took, ms (spaces the next one). */
  #rescanCostMs = 0;
  #running: Promise<PassResult> | null = null;
  #again = false;
  /** The next pass rescans the whole tree (the timer, start-up, or a pass of our own asked). */
  #scanWanted = true;
  /** Paths the watcher reported since the last scan: the next pass scans them. */
  #changedPaths = new Set<string>();
  #stopped = false;
  #last: PassResult = {
    uploaded: 0,
    materialized: 0,
    conflicts: 0,
    pendingUp: 0,
    pendingUpBytes: 0,
    pendingDown: 0,
    pendingDownBytes: 0,
  };
  #synced: SyncedState;
  /** Proposals whose outcome is not recorded yet (see pending_proposals.ts). */
  #pending: PendingProposals;
  /** What passes plan from, kept between them (see plan_views.ts). */
  #views: PlanViews;
  #passes = 0;
  /** Entries written to disk so far (in passes and in the background). */
  #writes = 0;
  #lastPassEnd = 0;
  /** Directories deleted elsewhere and kept here (not empty), warned about once each. */
  #keptDirs = new Set<string>();
  /**
   * Large files being written in the background, by path, with their size: a pass does not
   * wait for them, so the small files of later commits are written meanwhile (a 256 MiB
   * transfer held back the thousand files committed after it). Later passes leave these
   * paths alone, and each one's end asks for a pass.
   */
  #inflight = new Map<string, { size: number; done: Promise<void> }>();
  /**
   * Huge files a scan hashes in the background (see ScanOptions.backgroundBytes), by path,
   * with their size: the first scan of a folder with a 256 MiB file beside a thousand small
   * ones commits the small ones while the large one is hashed. Passes leave these paths alone
   * until their records are written, then a pass is asked for.
   */
  #hashing = new Map<string, { size: number }>();
  /** Paths being hashed that a file event named meanwhile: scanned again once hashed. */
  #hashingEvents = new Set<string>();
  /** The background hashing runs, for stop(). */
  #backgroundScans = new Set<Promise<void>>();
  /** Batches of small files fetched so far (names their shared chunks, see #prefetchShare). */
  #prefetches = 0;
  /**
   * Chunks of the large files being written that other members may fetch from here already
   * (the daemon serves them; see partial_chunks.ts).
   */
  readonly partialChunks = new PartialChunks();
  /** Places for background writes, and for those of huge files (which take one of each). */
  readonly #backgroundSlots = new Limiter(BACKGROUND_WRITES);
  readonly #hugeSlots = new Limiter(HUGE_FILE_WRITES);
  /**
   * Paths whose background write ended since the running pass began. Such a write records the
   * file and its synced state while the pass reads them, so the pass may have seen one before
   * the write and the other after: it leaves these paths to the next pass.
   */
  #endedDuringPass = new Set<string>();
  /**
   * The last failure that kept local changes from being committed, and committed ones from
   * being written: status shows them (a pipeline's `status --wait` says why it timed out), and
   * each new reason is warned about once (A's changes waited without a word at the default log
   * level while B's disk was full: the reason was a debug line).
   */
  #waiting: { up: string | null; down: string | null } = { up: null, down: null };
  #warned = new Map<string, number>();

  constructor(private readonly deps: EngineDeps, private readonly opts: EngineOptions = {}) {
    this.#synced = new SyncedState(deps.store.kv);
    this.#pending = new PendingProposals(deps.store.kv);
    this.#views = new PlanViews(deps.store.files, this.#synced, deps.index);
  }

  /** Remove temp files a crash left, start watching and the periodic rescan, run a pass. */
  async start(): Promise<void> {
    const swept = await sweepTempFiles(this.deps.store.root);
    if (swept > 0) this.deps.log.info("removed unfinished writes", { count: swept });
    if (this.opts.watch !== false) {
      this.#watcher = new Watcher(this.deps.store.root, (batch) => this.#changed(batch), {
        // A short quiet period: create-to-visible latency starts here. Bursts still coalesce
        // (a pass is single-flight and picks up everything changed meanwhile).
        debounceMs: 50,
        onError: (e) => this.deps.log.warn("watcher error", { error: String(e) }),
      });
    }
    this.#rescanSoon();
    this.request();
  }

  /**
   * A watcher batch: the next pass scans those paths only (a full scan if the batch
   * overflowed, or too many paths are waiting).
   */
  #changed(batch: WatchBatch): void {
    if (batch.overflow) this.#scanWanted = true;
    else {
      for (const p of batch.paths) this.#changedPaths.add(p);
      if (this.#changedPaths.size > MAX_CHANGED_PATHS) this.#scanWanted = true;
    }
    this.request({ scan: false });
  }

  /**
   * Ask for a pass soon; coalesces with one already running. `scan: false` when only the
   * committed index changed (a commit arrived): the pass then skips rescanning the tree, which
   * on a tree of thousands of files was a good part of create-to-visible latency. Skipping is
   * safe: a local edit the last scan missed is protected by the materializer (it refuses to
   * replace a path whose disk state differs from the scan's record) and its file events ask
   * for a scanning pass anyway.
   */
  request(opts: { scan?: boolean } = {}): void {
    if (this.#stopped) return;
    if (opts.scan !== false) this.#scanWanted = true;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#loop();
  }

  /** Run passes until no request arrived during the last one. */
  async #loop(): Promise<PassResult> {
    try {
      do {
        this.#again = false;
        try {
          this.#last = await this.#pass();
        } catch (e) {
          this.deps.log.warn("sync pass failed", { error: (e as Error).message });
          this.#last = {
            ...this.#last,
            pendingUp: Math.max(1, this.#last.pendingUp),
            waitingUp: (e as Error).message,
          };
          // The pass may have failed before it rescheduled the rescan: it stays due.
          this.#rescanSoon();
        }
        this.#passes++;
        this.#lastPassEnd = Date.now();
      } while (this.#again && !this.#stopped);
      this.#retrySoon();
      return this.#last;
    } finally {
      this.#running = null;
    }
  }

  /** (Re)schedule the safety-net rescan: rescanMs from now, or longer for a costly tree. */
  #rescanSoon(): void {
    clearTimeout(this.#timer);
    if (this.#stopped) return;
    const base = this.opts.rescanMs ?? 10_000;
    const spaced = Math.min(RESCAN_DUTY * this.#rescanCostMs, RESCAN_MAX_MS);
    this.#timer = setTimeout(() => this.request(), Math.max(base, spaced));
  }

  /**
   * Changes still waiting (no majority, a failed fetch, a full disk) are tried again rescanMs
   * after the last pass, without a rescan: the rescan, spaced out on a large tree, was their
   * retry before.
   */
  #retrySoon(): void {
    clearTimeout(this.#retry);
    const { pendingUp, pendingDown } = this.#last;
    if (this.#stopped || (pendingUp === 0 && pendingDown === 0)) return;
    this.#retry = setTimeout(() => this.request({ scan: false }), this.opts.rescanMs ?? 10_000);
  }

  /** Forget this node's pending proposals of the paths `ops` write (before it proposes them). */
  async forgetPending(ops: readonly FileOp[]): Promise<void> {
    await this.#pending.forget(ops.flatMap(opPaths), new KvBatch(this.deps.store.kv));
  }

  /**
   * Run a scanning pass that starts after this call and return the result of the last pass
   * run. A pass running now may have read the tree before the call, so the one after it counts;
   * callers arriving during one pass share the next. Passes never overlap: the engine plans
   * from views that one pass at a time brings up to date.
   */
  async syncNow(): Promise<PassResult> {
    // While a loop runs it is inside a pass (it ends synchronously after its last one).
    const target = this.#passes + (this.#running ? 2 : 1);
    this.request();
    while (this.#passes < target && this.#running) await this.#running;
    return this.#last;
  }

  /** The last pass's result, for status. */
  get lastPass(): PassResult & { passes: number; at: number; busy: boolean; writes: number } {
    const busy = !!this.#running || this.#inflight.size > 0 || this.#hashing.size > 0;
    return {
      ...this.#last,
      passes: this.#passes,
      at: this.#lastPassEnd,
      busy,
      writes: this.#writes,
    };
  }

  async #pass(): Promise<PassResult> {
    const { store, log } = this.deps;
    const started = performance.now();
    this.#endedDuringPass.clear();
    const fullScan = this.#scanWanted;
    let hashedFiles = 0;
    // Reasons are this pass's failures: an old one would outlive what it explained.
    this.#waiting = { up: null, down: null };
    if (this.#scanWanted || this.#changedPaths.size > 0) {
      // Reported paths only, unless something asked for the whole tree.
      const paths = this.#scanWanted ? undefined : [...this.#changedPaths];
      this.#scanWanted = false;
      this.#changedPaths.clear();
      for (const p of paths ?? []) if (this.#hashing.has(p)) this.#hashingEvents.add(p);
      const skip = (p: string) => this.#inflight.has(p) || this.#hashing.has(p);
      const backgroundBytes = this.opts.backgroundHashBytes ?? HUGE_FILE_BYTES;
      // The scan writes the records of these paths, what lies below them and their directories
      // (of the whole tree if it falls back to a full scan), even if it fails half-way.
      let whole = true;
      let scan;
      try {
        if (paths === undefined) scan = await scanTree(store, { skip, backgroundBytes });
        else {
          scan = await scanPaths(store, paths, { skip, backgroundBytes });
          whole = scan.whole;
        }
      } finally {
        if (whole) this.#views.touchAll();
        else {
          this.#views.touch(paths!, "tree");
          this.#views.touch(paths!.flatMap(ancestors), "own");
        }
      }
      for (const p of scan.problems) log.warn("scan problem", { path: p.path, error: p.message });
      hashedFiles = scan.hashedFiles;
      if (scan.background) this.#hashInBackground(scan.background);
    }
    const scanned = performance.now();
    // This node's own proposals that committed unheard of (timed out, or it died first) are
    // recorded as synced before planning, so they do not pass for someone else's change.
    const recovered = await this.#pending.recover(
      this.deps.index,
      this.#synced,
      this.deps.nodeId,
      new KvBatch(store.kv),
    );
    if (recovered.length > 0) {
      log.debug("own commits recovered", { paths: recovered.length });
      this.#views.touch(recovered, "own");
    }
    const { local, synced, committed, at: plannedAt } = await this.#loadViews();
    const plan = reconcile(local, synced, committed);
    // Paths a background write still owns, or whose write ended while this pass read its
    // views, wait for the next pass.
    const raced = (path: string) => this.#endedDuringPass.has(path);
    const busy = (path: string) =>
      this.#inflight.has(path) || this.#hashing.has(path) || raced(path);
    const plannedPaths = [
      ...plan.materialize.map((r) => r.path),
      ...plan.conflicts.map((c) => c.path),
      ...plan.uploadWaves.flat().flatMap(opPaths),
    ];
    if (plannedPaths.some(raced)) this.#again = true; // planned again at once, from fresh views
    plan.materialize = plan.materialize.filter((r) => !busy(r.path));
    plan.conflicts = plan.conflicts.filter((c) => !busy(c.path));
    plan.adopt = plan.adopt.filter((path) => !busy(path));
    plan.uploadWaves = plan.uploadWaves
      .map((wave) => wave.filter((op) => !opPaths(op).some(busy)))
      .filter((wave) => wave.length > 0);
    // What this pass writes (records of files written, adopted or uploaded) the next one reads
    // again (paths left to a background write too: harmless). Conflict copies and refusals ask
    // for a full scan, which reads everything.
    this.#views.touch([...plannedPaths, ...plan.adopt], "own");
    const planned = performance.now();
    if (fullScan) {
      // The next safety-net rescan is due a while after this one, which stands for it.
      if (hashedFiles === 0) this.#rescanCostMs = planned - started;
      this.#rescanSoon();
    }
    // Each path is written at most once per pass and nothing rescans meanwhile, so the
    // records loaded above are what the materializer would read again per file.
    const knownOf = (path: string) => ({
      local: local.get(path) ?? null,
      synced: synced.get(path) ?? null,
    });
    // Until this pass ends, status reports everything it is about to do as pending: a pass
    // can take long (a large transfer, or a push waiting for peers that do not answer).
    const ops = plan.uploadWaves.flat();
    const writes = plan.materialize.filter((r) => !r.deleted);
    this.#last = {
      ...this.#last,
      pendingUp: ops.length + this.#hashing.size,
      pendingUpBytes: ops.reduce((n, op) => n + (op.op === "put" ? op.size : 0), 0) +
        this.#hashingBytes(),
      pendingDown: plan.materialize.length + this.#inflight.size,
      pendingDownBytes: writes.reduce((n, r) => n + r.size, 0) + this.#inflightBytes(),
    };
    for (const r of plan.refused) log.warn("path not synced", { path: r.path, reason: r.reason });

    await this.#adopt(plan, committed);
    let conflicts = 0;
    for (const c of plan.conflicts) {
      const copy = await keepConflictCopy(
        store,
        c.path,
        shortNodeName(this.deps.nodeId),
        Date.now(),
        (candidate) => committed.has(candidate) && !committed.get(candidate)!.deleted,
      );
      log.info("conflict", { path: c.path, kept: copy, committed: c.committed.version });
      conflicts++;
      await this.#write(c.committed, null, undefined, knownOf(c.path));
    }
    let materialized = 0;
    let pendingDown = 0;
    let pendingDownBytes = 0;
    const phases = writePhases(plan.materialize);
    const write = async (
      rec: IndexRecord,
      prefetched: PrefetchedObjects | null = null,
      group?: WriteGroup,
    ) => {
      if (await this.#write(rec, prefetched, group, knownOf(rec.path))) materialized++;
      else {
        pendingDown++;
        pendingDownBytes += rec.deleted ? 0 : rec.size;
      }
    };
    for (const rec of phases.serial) await write(rec);
    // Many small files are bound by round trips and fsyncs, not bandwidth: their objects are
    // fetched ahead a batch at a time and they are written several at once; larger files go
    // alongside, fewer at once.
    const small = spreadOverDirectories(phases.concurrent.filter(isPrefetchable));
    const large = phases.concurrent.filter(writtenInBackground);
    const others = spreadOverDirectories(
      phases.concurrent.filter((r) => !isPrefetchable(r) && !writtenInBackground(r)),
    );
    // A tombstone of this pass may be the old path of a renamed large file, whose chunks the
    // new path reads from it: then this pass waits for its large files before deleting.
    let largeFailed = 0;
    const largeDone = large.map((rec) =>
      this.#writeInBackground(rec, knownOf(rec.path)).then((ok) => {
        if (!ok) {
          largeFailed++;
          pendingDownBytes += rec.size;
        }
      })
    );
    if (phases.last.length > 0) await Promise.all(largeDone);
    const batches = [...prefetchBatches(small)];
    await Promise.all([
      mapLimit(others, MATERIALIZE_CONCURRENCY, write),
      // One pool of writers runs through every batch: a batch's objects are fetched while the
      // one before is written, and it is recorded once its last file is written.
      writeBatches(batches, MATERIALIZE_CONCURRENCY, {
        fetch: async (i) => {
          const share = this.#prefetchShare(batches[i]);
          const objects = await prefetchObjects(store, this.deps.remote, batches[i], share)
            .catch(() => null);
          return { objects, share, group: new WriteGroup(store) };
        },
        write: (rec, { objects, group }) => write(rec, objects, group),
        finish: async (_, { share, group }) => {
          await group.finish().catch((e) =>
            log.warn("recording written files failed", { error: (e as Error).message })
          );
          // Written and recorded: served from the files from now on.
          if (share) this.partialChunks.forget(share.owner);
        },
      }),
    ]);
    for (const rec of phases.last) await write(rec);
    // Large files still being written, and those of this pass that failed, are pending.
    pendingDown += this.#inflight.size + largeFailed;
    pendingDownBytes += this.#inflightBytes();
    const written = performance.now();
    const { uploaded, pending, pendingBytes } = await this.#upload(
      plan.uploadWaves,
      plan.uploadDeps,
      local,
      committed,
    );
    const ms = (a: number, b: number) => Math.round(b - a);
    log.debug("sync pass", {
      scanMs: ms(started, scanned),
      planMs: ms(scanned, planned),
      writeMs: ms(planned, written),
      uploadMs: ms(written, performance.now()),
      written: materialized,
      uploaded,
    });
    if (conflicts > 0) {
      // The conflict copies are new local entries: the next pass must scan to upload them.
      this.#again = true;
      this.#scanWanted = true;
    }
    // A reason holds while something still waits; a pass with nothing left clears it.
    // Files still being hashed are local changes not committed yet.
    const pendingUp = pending + this.#hashing.size;
    const pendingUpBytes = pendingBytes + this.#hashingBytes();
    if (pendingUp === 0) this.#waiting.up = null;
    if (pendingDown === 0) this.#waiting.down = null;
    return {
      uploaded,
      materialized,
      conflicts,
      pendingUp,
      pendingUpBytes,
      pendingDown,
      pendingDownBytes,
      waitingUp: this.#waiting.up,
      waitingDown: this.#waiting.down,
      plannedAt,
    };
  }

  /**
   * Local changes could not be committed for this reason (no majority holds their data, no
   * quorum, a peer's disk is full): kept for status, warned once per reason and minute.
   */
  #waitUp(reason: string): void {
    this.deps.log.debug("proposal not committed", { error: reason });
    this.#waiting.up = reason;
    const now = Date.now();
    if (now - (this.#warned.get(reason) ?? -Infinity) < WAIT_WARN_INTERVAL_MS) return;
    if (this.#warned.size > 100) this.#warned.clear(); // reasons name peers and counts
    this.#warned.set(reason, now);
    this.deps.log.warn("local changes wait", { reason });
  }

  /**
   * Wait for the files a scan hashes in the background, then let the next pass plan them
   * (their records are written by then). An event on one of them meanwhile scans it again.
   */
  #hashInBackground(bg: BackgroundScan): void {
    const { log } = this.deps;
    const paths = bg.files.map((f) => f.path);
    for (const f of bg.files) this.#hashing.set(f.path, { size: f.size });
    const run = bg.done.then(
      (r) => {
        for (const p of r.problems) log.warn("scan problem", { path: p.path, error: p.message });
      },
      (e) => {
        // The index could not be written: a full scan takes these paths in again.
        log.warn("background hashing failed", { error: (e as Error).message });
        this.#scanWanted = true;
      },
    ).finally(() => {
      for (const p of paths) {
        this.#hashing.delete(p);
        this.#endedDuringPass.add(p);
        if (this.#hashingEvents.delete(p)) this.#changedPaths.add(p);
      }
      this.#views.touch(paths, "tree");
      this.#backgroundScans.delete(run);
      this.request({ scan: false });
    });
    this.#backgroundScans.add(run);
  }

  /** Bytes of the large files being written in the background. */
  #inflightBytes(): number {
    return totalSize(this.#inflight.values());
  }

  /** Bytes of the huge files being hashed in the background. */
  #hashingBytes(): number {
    return totalSize(this.#hashing.values());
  }

  /**
   * Write a large file without holding up the pass (see #inflight), at most
   * BACKGROUND_WRITES at once (HUGE_FILE_WRITES of them huge); resolves when it is written or
   * given up for now.
   */
  #writeInBackground(
    rec: IndexRecord,
    known: { local: LocalFileRecord | null; synced: SyncedRecord | null },
  ): Promise<boolean> {
    const write = () =>
      this.#backgroundSlots.run(() =>
        this.#stopped ? Promise.resolve(false) : this.#write(rec, null, undefined, known, true)
      );
    const done = (async () => {
      let written = false;
      try {
        // A huge file waits for its own kind of place before it takes a general one.
        written = rec.size > HUGE_FILE_BYTES ? await this.#hugeSlots.run(write) : await write();
      } finally {
        this.#inflight.delete(rec.path);
        this.#endedDuringPass.add(rec.path);
        this.#views.touch([rec.path], "own");
        // A newer version may have been committed meanwhile: plan again. An edit made here
        // during the write makes the materializer refuse (it looks at the old file again just
        // before the rename), which asks for a full scan: plan then too. A write that failed for
        // want of a peer waits for the next trigger, as in a pass. (Scanning the path after a
        // successful write would re-read the whole new file: its mtime is recent, so the
        // racy-file rule does not trust its record yet.)
        if (written || this.#scanWanted) this.request({ scan: false });
      }
      return written;
    })();
    this.#inflight.set(rec.path, { size: rec.size, done: done.then(() => {}) });
    return done;
  }

  /**
   * The views to plan from. With `checkViews`, compared with a whole read first: a difference
   * is logged as an error, and the whole read is used.
   */
  async #loadViews(): Promise<Views> {
    const views = await this.#views.load();
    if (!this.opts.checkViews) return views;
    const { store, index } = this.deps;
    const found = await compareWithStore(views, store.files, this.#synced, index);
    // A background write that ended meanwhile wrote its records after the load: not a miss.
    const missed = found.filter((d) =>
      !this.#inflight.has(d.path) && !this.#hashing.has(d.path) &&
      !this.#endedDuringPass.has(d.path)
    );
    if (missed.length === 0) return views;
    const { view, path, problem } = missed[0];
    this.deps.log.error("plan views out of step", { view, path, problem, more: missed.length - 1 });
    this.#views.touchAll();
    return await this.#views.load();
  }

  /** Record synced state for paths whose disk content already equals the committed entry. */
  async #adopt(plan: SyncPlan, committed: ReadonlyMap<string, IndexRecord>): Promise<void> {
    if (plan.adopt.length === 0) return;
    const batch = new KvBatch(this.deps.store.kv);
    for (const path of plan.adopt) await this.#synced.adopt(batch, path, committed.get(path));
    await batch.flush();
  }

  /** Write one committed entry to disk; false if it must wait (local change, fetch failed). */
  async #write(
    rec: IndexRecord,
    prefetched: PrefetchedObjects | null,
    group?: WriteGroup,
    known?: { local: LocalFileRecord | null; synced: SyncedRecord | null },
    share = false,
  ): Promise<boolean> {
    try {
      const r = await materialize(this.deps.store, rec, this.#sources(rec.origin, prefetched), {
        onWrite: (path, expected) => this.#watcher?.expect(path, expected),
        group,
        known,
        share: share
          ? {
            chunks: this.partialChunks,
            stripe: this.#stripe(rec),
            restripe: () => this.#stripe(rec, false),
          }
          : undefined,
      });
      if (r.status === "local-changed") {
        this.#scanWanted = true;
        if (r.reason === DIR_NOT_EMPTY) {
          // Deleted elsewhere, but here it still holds entries: new files the next scan will
          // upload (their events trigger it), or ignored files, which are kept (as Syncthing
          // does) along with the directory. Passing again at once would spin on the latter.
          if (!this.#keptDirs.has(rec.path)) {
            this.#keptDirs.add(rec.path);
            this.deps.log.warn("directory deleted elsewhere is kept: it is not empty here", {
              path: rec.path,
            });
          }
        } else {
          this.#again = true;
        }
        return false;
      }
      this.#keptDirs.delete(rec.path);
      if (r.status !== "unchanged") {
        this.#writes++;
        this.deps.log.info("materialized", {
          path: rec.path,
          version: rec.version,
          status: r.status,
          fetched: r.bytesFetched,
        });
      }
      return true;
    } catch (e) {
      const error = (e as Error).message;
      this.deps.log.warn("materialize failed", { path: rec.path, error });
      this.#waiting.down = error;
      return false;
    }
  }

  /**
   * Propose the planned ops in commands of UPLOAD_BATCH ops. Every command's objects are made
   * durable on a majority at once (UPLOAD_CONCURRENCY at a time, in wave order); a command is
   * proposed once that is done and the commands holding the ops it depends on have ended, not
   * when its whole previous wave has. (Waiting for waves, the small files of a folder moved in
   * waited for a large file next to their directories to be pushed, and pushes of one wave
   * did not overlap those of the next.) Returns how many committed and how many must wait.
   */
  async #upload(
    waves: FileOp[][],
    deps: ReadonlyMap<FileOp, readonly FileOp[]>,
    local: ReadonlyMap<string, LocalFileRecord>,
    committed: ReadonlyMap<string, IndexRecord>,
  ): Promise<{ uploaded: number; pending: number; pendingBytes: number }> {
    let uploaded = 0;
    let pending = 0;
    let pendingBytes = 0;
    const runBatch = async (batch: FileOp[], durable: boolean) => {
      if (durable && await this.#propose(batch, local, committed, true)) {
        uploaded += batch.length;
        return;
      }
      // A command is all or none: find which ops can go by proposing them one by one.
      for (const op of batch) {
        if (batch.length > 1 && await this.#propose([op], local, committed)) uploaded++;
        else {
          pending++;
          pendingBytes += op.op === "put" ? op.size : 0;
        }
      }
    };
    const batches = waves.flatMap(uploadBatches);
    const batchOf = new Map<FileOp, number>();
    batches.forEach((batch, k) => batch.forEach((op) => batchOf.set(op, k)));
    const pushes = new Limiter(UPLOAD_CONCURRENCY);
    const proposals = new Limiter(UPLOAD_CONCURRENCY);
    const ended: Promise<void>[] = [];
    batches.forEach((batch, k) => {
      // Dependencies are of earlier waves, so of earlier commands (an op this pass left out
      // has none: it is not proposed, as when a wave ended with it pending).
      const before = new Set<number>();
      for (const op of batch) {
        for (const dep of deps.get(op) ?? []) {
          const j = batchOf.get(dep);
          if (j !== undefined && j < k) before.add(j);
        }
      }
      const durable = pushes.run(() => this.#makeDurable(batch, committed));
      ended[k] = (async () => {
        const ok = await durable;
        await Promise.all([...before].map((j) => ended[j]));
        await proposals.run(() => runBatch(batch, ok));
      })();
    });
    await Promise.all(ended);
    return { uploaded, pending, pendingBytes };
  }

  /**
   * Push the objects of `ops` until a majority of voters (this node included) durably holds
   * them; false if that is not possible now (the ops wait, logged).
   */
  async #makeDurable(
    ops: FileOp[],
    committed: ReadonlyMap<string, IndexRecord>,
  ): Promise<boolean> {
    // Durability before commit: once committed, every node will want these objects, and
    // they must exist beyond this node even if its disk dies right after.
    if (!this.deps.replicate || !(this.deps.replicationNeeded?.() ?? true)) return true;
    try {
      const t0 = performance.now();
      const objects = await objectsOfOps(ops, this.deps.store.packs, (op) => {
        if (op.op !== "put" || op.base === 0) return null;
        const base = committed.get(op.path);
        return base && base.version === op.base && !base.deleted && base.kind === "file"
          ? base.root
          : null;
      });
      const listed = performance.now();
      if (objects.length > 0) await this.deps.replicate(objects);
      this.deps.log.debug("objects durable on a majority", {
        ops: ops.length,
        objects: objects.length,
        listMs: Math.round(listed - t0),
        pushMs: Math.round(performance.now() - listed),
      });
      return true;
    } catch (e) {
      this.#waitUp((e as Error).message);
      return false;
    }
  }

  /** Propose ops as one command (`durable`: their objects were made durable already). */
  async #propose(
    ops: FileOp[],
    local: ReadonlyMap<string, LocalFileRecord>,
    committed: ReadonlyMap<string, IndexRecord>,
    durable = false,
  ): Promise<boolean> {
    if (!durable && !(await this.#makeDurable(ops, committed))) return false;
    // Recorded first: if the proposal commits unheard of, the next pass still knows it as ours.
    await this.#pending.record(
      ops,
      local,
      await this.deps.index.applied(),
      new KvBatch(this.deps.store.kv),
    );
    let result: ApplyResult;
    try {
      result = await this.deps.propose({ origin: this.deps.nodeId, ops });
    } catch (e) {
      // The outcome is unknown: the pending records stay.
      this.#waitUp((e as Error).message);
      return false;
    }
    const batch = new KvBatch(this.deps.store.kv);
    await this.#pending.settle(ops, local, batch);
    if (!result.ok) {
      await batch.flush();
      if (ops.length === 1) {
        this.deps.log.info("proposal refused", {
          path: result.path,
          code: result.code,
          reason: result.message,
        });
        this.#again = true;
      }
      return false;
    }
    for (const op of ops) {
      await this.#synced.recordUpload(batch, op, result.version, local);
      this.deps.log.info("committed", {
        op: op.op,
        path: "path" in op ? op.path : `${op.from} -> ${op.to}`,
        version: result.version,
      });
    }
    await batch.flush();
    return true;
  }

  /**
   * This node's stripe of a file that every member but its origin fetches now (a new file
   * committed elsewhere). Null with fewer than two such members: nothing to share.
   */
  #stripe(rec: IndexRecord, log = true): Stripe | null {
    const fetching = (this.deps.members?.() ?? []).filter((m) => m !== rec.origin);
    if (fetching.length < 2) return null;
    const stripe = stripeFor(this.deps.nodeId, fetching, rec.size);
    if (stripe && log) {
      this.deps.log.debug("fetching a stripe first", {
        path: rec.path,
        stripe: stripe.index,
        of: stripe.count,
      });
    }
    return stripe;
  }

  /**
   * How a batch of small files is shared with the other members fetching it (every member but
   * the batch's origins), or null with fewer than two such members.
   */
  #prefetchShare(batch: IndexRecord[]): PrefetchShare | null {
    const origins = new Set(batch.map((r) => r.origin));
    const fetching = (this.deps.members?.() ?? []).filter((m) => !origins.has(m));
    if (fetching.length < 2) return null;
    const stripe = stripeFor(this.deps.nodeId, fetching);
    if (!stripe) return null;
    return { chunks: this.partialChunks, owner: `prefetch-${this.#prefetches++}`, stripe };
  }

  /** Materializer sources backed by the remote object fetcher, asking `origin` first. */
  #sources(origin: string, prefetched: PrefetchedObjects | null): MaterializeSources {
    const remote = this.deps.remote;
    const preferred = origin && origin !== this.deps.nodeId ? [origin] : [];
    const nodes: NodeSource = {
      async getNode(hash: Hash): Promise<Uint8Array> {
        const ahead = prefetched?.get(hash);
        if (ahead) return ahead;
        let found: Uint8Array | null = null;
        await remote.fetch([hash], (_h, bytes) => {
          found = bytes;
          return Promise.resolve();
        }, preferred);
        if (!found) throw new Error("no peer has this tree node");
        return found;
      },
    };
    return {
      nodes,
      // The object fetcher verifies every object, and prefetched ones came through it.
      verified: true,
      inMemory: prefetched ? (hash) => prefetched.get(hash) : undefined,
      async fetchChunks(hashes, onChunk, from, signal) {
        const rest: Hash[] = [];
        for (const h of hashes) {
          const ahead = prefetched?.get(h);
          if (ahead) await onChunk(h, ahead);
          else rest.push(h);
        }
        if (rest.length === 0) return;
        const r = from
          ? await remote.fetch(rest, onChunk, from, true, signal)
          : await remote.fetch(rest, onChunk, preferred, false, signal);
        if (r.missing.length > 0) {
          throw new Error(`${r.missing.length} chunks are held by no reachable peer`);
        }
      },
    };
  }

  /** Stop watching and wait for a running pass to end. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#retry);
    await this.#watcher?.close();
    await this.#running?.catch(() => {});
    await Promise.all([...this.#inflight.values()].map((w) => w.done));
    await Promise.all([...this.#backgroundScans]);
  }
}
