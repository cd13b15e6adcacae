/**
 * The scanner: brings the local index up to date with the directory. It walks the tree,
 * re-chunks only files whose size, mtime or inode changed since the last scan (so a rescan of
 * an unchanged tree reads no file content), records where each chunk lies (copying no file
 * content), stores the Merkle nodes of files and of the directory tree, and returns the
 * directory root.
 *
 * Write order keeps a crash harmless: tree nodes reach the pack files (fsynced) before any KV
 * entry refers to them (KvBatch's beforeCommit hook), chunk locations and file records come
 * next, and the scan summary is written last.
 */
import {
  type ChunkerOptions,
  DEFAULT_CHUNKER_OPTIONS,
  type Hash,
  hashFromKey,
  hashKey,
} from "../chunk/mod.ts";
import {
  buildDirTree,
  comparePaths,
  type DirEntry,
  EMPTY_FILE_ROOT,
  walkFileChunks,
} from "../merkle/mod.ts";
import { KeptObjects, KvBatch, type LocalFileRecord, type LocalStore } from "../store/mod.ts";
import { type HashedFile, HashFileError } from "./hash_file.ts";
import { chunkList, offsetsByHash } from "./chunk_offsets.ts";
import { HashPool } from "./hash_pool.ts";
import { type WalkEntry, walkPaths, type WalkProblem, walkTree } from "./walk.ts";
import { IGNORE_FILE_NAME } from "./ignore_rules.ts";

/** Progress of a running scan, for progress bars. */
export interface ScanProgress {
  filesDone: number;
  filesTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

/** Options of one scan. */
export interface ScanOptions {
  chunker?: Partial<ChunkerOptions>;
  /** Hash workers (0: hash on the calling thread); default: cores, or 0 for small jobs. */
  workers?: number;
  onProgress?: (p: ScanProgress) => void;
  /**
   * Look only at these paths and below them (what a watcher reported; they may be gone), and
   * keep every other record as it is: a file event no longer walks the whole tree. A path
   * named like an ignore file, or the root itself, makes it a full scan (the rules changed).
   */
  paths?: readonly string[];
  /**
   * Paths this node is writing right now (a large file in the background): their records
   * stay as they are and their content is not read, so a half-recorded write of our own is
   * never taken for a local edit.
   */
  skip?: (path: string) => boolean;
  /**
   * New or changed files of at least this many bytes are hashed in the background when the
   * scan has other files to hash too: the scan returns once the others are recorded (their
   * changes can be committed meanwhile), and `background` tells when these are. Until then
   * such a path keeps its previous record, or has none.
   */
  backgroundBytes?: number;
}

/** The files a scan left to hash in the background. */
export interface BackgroundScan {
  /** The files, with their sizes as walked. */
  files: { path: string; size: number }[];
  /** Resolves once their records are written (or they failed, as problems). */
  done: Promise<BackgroundScanResult>;
}

/** What the background part of a scan did. */
export type BackgroundScanResult = Pick<ScanResult, "hashedFiles" | "hashedBytes" | "problems">;

/** What a scan found and did. */
export interface ScanResult {
  /** Root of the directory tree. */
  root: Hash;
  files: number;
  dirs: number;
  symlinks: number;
  /** Bytes in all files. */
  bytes: number;
  /** Files (and bytes) whose content was read this time. */
  hashedFiles: number;
  hashedBytes: number;
  /** Paths that were in the index but are gone. */
  removed: number;
  /** Entries that could not be taken in; the scan still covers everything else. */
  problems: WalkProblem[];
  durationMs: number;
  /** Files still being hashed (see ScanOptions.backgroundBytes). */
  background: BackgroundScan | null;
}

/** Where the records of hashed files go: the scan's own, or the background's. */
interface HashSink {
  kept: KeptObjects;
  batch: KvBatch;
  records: Map<string, LocalFileRecord>;
  problems: WalkProblem[];
  counts: { hashedFiles: number; hashedBytes: number };
  failure: { error: unknown } | null;
}

/** Below these, files are hashed on the main thread: a worker's start-up costs more. */
const INLINE_HASH_BYTES = 8 * 1024 * 1024;
const INLINE_HASH_FILES = 100;
/** Files from this size are re-chunked guided by their previous chunks (see rechunkStream). */
const GUIDED_RECHUNK_BYTES = 1 << 20;

/**
 * Index record of a symlink or directory: no content to chunk, so the root is the empty
 * file's; a symlink's target is kept inline and its size is the target's UTF-8 length.
 */
function recordOf(e: WalkEntry): LocalFileRecord {
  const base = { mtime: e.mtime, mode: e.mode, ino: e.ino, root: EMPTY_FILE_ROOT };
  if (e.kind === "symlink") {
    const size = new TextEncoder().encode(e.target!).byteLength;
    return { kind: "symlink", ...base, size, target: e.target };
  }
  return { kind: "dir", ...base, size: 0 };
}

/** Whether the index record still describes the file, so its content need not be read. */
function unchanged(
  prev: LocalFileRecord | undefined,
  e: WalkEntry,
  lastScanStart: number,
): boolean {
  return prev !== undefined && prev.kind === "file" && prev.size === e.size &&
    prev.mtime === e.mtime && prev.ino === e.ino &&
    // A file modified after the previous scan started may have changed again within the same
    // mtime tick after it was read ("racily clean", as git calls it): read it again.
    prev.mtime < lastScanStart;
}

/** Whether `path` is one of `roots` or below one of them. */
function underAny(path: string, roots: ReadonlySet<string>): boolean {
  for (let p = path; p !== "";) {
    if (roots.has(p)) return true;
    const cut = p.lastIndexOf("/");
    p = cut < 0 ? "" : p.slice(0, cut);
  }
  return false;
}

/** Whether a reported path can be scanned on its own (else the scan covers the whole tree). */
function targetable(path: string): boolean {
  if (path === "" || path === ".") return false;
  return path.slice(path.lastIndexOf("/") + 1) !== IGNORE_FILE_NAME;
}

/** Scan the store's directory and update its index. */
export async function scanTree(store: LocalStore, options: ScanOptions = {}): Promise<ScanResult> {
  const r = await scanCore(store, options, true);
  return { ...r, root: r.root! };
}

/** What scanPaths did: scanTree's result without the directory root and the counts. */
export type PathsScanResult =
  & Pick<
    ScanResult,
    "hashedFiles" | "hashedBytes" | "removed" | "problems" | "durationMs" | "background"
  >
  & {
    /**
     * The whole tree was scanned (a listed path could not be scanned alone): any record may
     * have changed, not only those of the listed paths, their subtrees and their directories.
     */
    whole: boolean;
  };

/**
 * Bring the index up to date for these paths and what lies below them (what a watcher
 * reported), reading only their records. Unlike scanTree with `paths`, it neither rebuilds the
 * directory tree nor writes the scan summary, which read every record of the tree: with 20,000
 * files a one-file event took 0.4-1.3 s to scan that way. A path that cannot be scanned alone
 * (an ignore file, the root) makes it a full scanTree.
 */
export async function scanPaths(
  store: LocalStore,
  paths: readonly string[],
  options: Omit<ScanOptions, "paths"> = {},
): Promise<PathsScanResult> {
  const { hashedFiles, hashedBytes, removed, problems, durationMs, root, background } =
    await scanCore(store, { ...options, paths }, false);
  return {
    hashedFiles,
    hashedBytes,
    removed,
    problems,
    durationMs,
    background,
    whole: root !== null,
  };
}

/** A scan; `withSummary` false skips the tree and summary of a scan of listed paths. */
async function scanCore(
  store: LocalStore,
  options: ScanOptions,
  withSummary: boolean,
): Promise<Omit<ScanResult, "root"> & { root: Hash | null }> {
  const start = Date.now();
  const chunker = { ...DEFAULT_CHUNKER_OPTIONS, ...options.chunker };
  // Stored trees were cut with the cluster's fixed options; a scan with others (tests) must
  // not be guided by them.
  const sameOptions = chunker.minSize === DEFAULT_CHUNKER_OPTIONS.minSize &&
    chunker.avgSize === DEFAULT_CHUNKER_OPTIONS.avgSize &&
    chunker.maxSize === DEFAULT_CHUNKER_OPTIONS.maxSize;
  const problems: WalkProblem[] = [];
  const only = options.paths !== undefined && options.paths.every(targetable)
    ? options.paths
    : null;
  // A summary needs every record (the tree is rebuilt whole); without one, only those of the
  // listed paths are read.
  const summary = withSummary || only === null;
  const previous = summary ? await store.files.loadAll() : await store.files.loadUnder(only!);
  const lastScanStart = (await store.files.lastScan())?.start ?? 0;
  const entries: WalkEntry[] = [];
  const walk = only === null
    ? walkTree(store.root, problems)
    : walkPaths(store.root, only, problems);
  for await (const e of walk) entries.push(e);
  // Entries walked outside the listed paths (their directories) are compared with their own
  // records too (a file that became a directory has its chunk locations forgotten); those
  // records are only looked at, never taken for removed.
  const outside = new Map<string, LocalFileRecord>();
  if (!summary) {
    const listed = new Set(only!);
    for (const e of entries) {
      if (previous.has(e.path) || underAny(e.path, listed)) continue;
      const rec = await store.files.get(e.path);
      if (rec) outside.set(e.path, rec);
    }
  }
  const previousOf = (path: string) => previous.get(path) ?? outside.get(path);

  // The tree nodes this scan makes, durable before any KV entry of it that refers to them.
  const kept = new KeptObjects(store.packs);
  const batch = new KvBatch(store.kv, () => kept.flush());
  // Chunks located during this scan: a forget for an old copy of the same chunk (a renamed or
  // duplicated file) must not drop the new location queued in the same batch.
  const located = new Set<string>();
  const records = new Map<string, LocalFileRecord>();
  if (only !== null && summary) {
    // Everything outside the listed paths stays as the last scan left it.
    const listed = new Set(only);
    for (const [path, rec] of previous) if (!underAny(path, listed)) records.set(path, rec);
  }
  const toHash: WalkEntry[] = [];
  for (const e of entries) {
    const prev = previousOf(e.path);
    if (options.skip?.(e.path)) {
      if (prev) records.set(e.path, prev);
      continue;
    }
    if (e.kind !== "file") {
      const rec = recordOf(e);
      records.set(e.path, rec);
      if (prev && prev.kind === "file") {
        await forgetChunks(store, batch, e.path, prev.root, located);
      }
      await store.files.put(batch, e.path, rec);
    } else if (unchanged(prev, e, lastScanStart)) {
      const rec = { ...prev!, mode: e.mode };
      records.set(e.path, rec);
      if (prev!.mode !== e.mode) await store.files.put(batch, e.path, rec);
    } else {
      toHash.push(e);
    }
  }

  const progress: ScanProgress = {
    filesDone: 0,
    filesTotal: toHash.length,
    bytesDone: 0,
    bytesTotal: toHash.reduce((n, e) => n + e.size, 0),
  };
  options.onProgress?.(progress);
  // One file gains nothing from a worker (one thread hashes it either way), and starting one
  // cost 400 ms more than hashing a 256 MiB file inline (1,032 vs 636 ms): the common case of an
  // edit to one large file.
  const smallJob = toHash.length <= 1 ||
    (progress.bytesTotal < INLINE_HASH_BYTES && toHash.length < INLINE_HASH_FILES);
  // No more workers than files: an idle worker is an isolate's worth of memory for nothing.
  const workers = options.workers ??
    (smallJob ? 0 : Math.min(navigator.hardwareConcurrency ?? 2, toHash.length));
  // Huge files go to the background only beside other files, and only on a worker: hashed on
  // the main thread, they would hold up everything the node does meanwhile.
  const minBackground = options.backgroundBytes ?? Infinity;
  const huge = (e: WalkEntry) => e.size >= minBackground;
  const deferring = workers > 0 && toHash.some(huge) && !toHash.every(huge);
  const later = deferring ? toHash.filter(huge) : [];
  const now = deferring ? toHash.filter((e) => !huge(e)) : toHash;
  const pool = new HashPool(workers, chunker);
  const counts = { hashedFiles: 0, hashedBytes: 0 };
  let background: BackgroundScan | null = null;
  try {
    /** Hash `e` and queue its records into `into`; failures land in `into` too. */
    const hashOne = async (e: WalkEntry, into: HashSink): Promise<void> => {
      // Locations are recorded as chunk batches arrive, so a huge file's chunk list is never
      // held whole.
      // An edited file: only locations that changed are written (an overwrite of 4 KiB in a
      // 256 MiB file rewrote 3,400 locations and forgot as many, about half the scan's time).
      // Without the old chunk map (too large, or unreadable), the old locations are dropped
      // before any new one is queued, so a chunk kept by the edit keeps its (new) location.
      const prev = previousOf(e.path);
      const oldList = prev && prev.kind === "file" ? await chunkList(prev.root, store.packs) : null;
      const old = oldList === null ? null : offsetsByHash(oldList);
      // The old list guides re-chunking a large file (an edit costs little more than its
      // SHA-256).
      const guide = oldList !== null && e.size >= GUIDED_RECHUNK_BYTES && sameOptions
        ? oldList
        : undefined;
      const forgotten = prev && prev.kind === "file" && old === null
        ? forgetChunks(store, into.batch, e.path, prev.root, located)
        : Promise.resolve();
      const seen = new Set<string>();
      const recording: Promise<void>[] = [];
      const onChunks = (chunks: HashedFile["chunks"]) => {
        const recorded = recordLocations(store, into.batch, e.path, chunks, located, old, seen);
        recorded.catch(() => {}); // observed once the file is hashed (Promise.all below)
        recording.push(recorded);
      };
      await forgotten.then(() => pool.hash(`${store.root}/${e.path}`, onChunks, guide, e.size))
        .then(
          async (hashed) => {
            try {
              await Promise.all(recording);
              if (old) await forgetGone(store, into.batch, e.path, old, seen, located);
              into.counts.hashedFiles++;
              into.counts.hashedBytes += hashed.size;
              const rec = await recordHashed(store, into.kept, into.batch, e.path, hashed, located);
              into.records.set(e.path, rec);
            } catch (err) {
              // The index could not be written (a failed KV commit fails every later one): the
              // scan fails once the jobs in flight are done, rather than as an unhandled
              // rejection of this job.
              into.failure ??= { error: err };
            }
          },
          async (err) => {
            await Promise.allSettled(recording);
            if (err instanceof HashFileError && err.code === "gone") return;
            into.problems.push({ path: e.path, message: (err as Error).message });
          },
        ).finally(() => {
          progress.filesDone++;
          progress.bytesDone += e.size;
          options.onProgress?.(progress);
        });
    };
    if (later.length > 0) {
      // Started first: the pool hands them to its first workers, so the longest jobs begin at
      // once, and the other workers take the rest of the tree.
      // Its own tree nodes and KV batch: committed when these files are done, not with the scan.
      const bgKept = new KeptObjects(store.packs);
      const sink: HashSink = {
        kept: bgKept,
        batch: new KvBatch(store.kv, () => bgKept.flush()),
        records: new Map(),
        problems: [],
        counts: { hashedFiles: 0, hashedBytes: 0 },
        failure: null,
      };
      const done = (async (): Promise<BackgroundScanResult> => {
        await Promise.all(later.map((e) => hashOne(e, sink)));
        if (sink.failure !== null) throw sink.failure.error;
        await sink.batch.flush();
        await sink.kept.flush();
        return { ...sink.counts, problems: sink.problems };
      })();
      background = { files: later.map((e) => ({ path: e.path, size: e.size })), done };
      // Until they are recorded, these paths keep what they had (a new file is not yet there).
      for (const e of later) {
        const prev = previousOf(e.path);
        if (prev) records.set(e.path, prev);
      }
    }
    const sink: HashSink = { kept, batch, records, problems, counts, failure: null };
    // Keep a bounded number of files in flight so memory does not grow with the tree.
    const inFlight = new Set<Promise<void>>();
    const maxInFlight = Math.max(4, workers * 8);
    // Woken whenever a job finishes, so the loop below waits without racing every promise.
    let slotFree: (() => void) | null = null;
    for (const e of now) {
      const job = hashOne(e, sink).finally(() => {
        inFlight.delete(job);
        slotFree?.();
      });
      inFlight.add(job);
      while (inFlight.size >= maxInFlight) {
        await new Promise<void>((resolve) => slotFree = resolve);
        slotFree = null;
      }
    }
    await Promise.all(inFlight);
    if (sink.failure !== null) throw sink.failure.error;
  } finally {
    // The pool lives on for the files hashed in the background.
    if (background === null) pool.close();
    else {
      const bg: BackgroundScan = background;
      bg.done.catch(() => {}).finally(() => pool.close());
    }
  }
  const { hashedFiles, hashedBytes } = counts;

  // A file that could not be read this time keeps its previous record, and so does everything
  // below a directory that could not be read: one unreadable entry does not look like a
  // deletion, which would be committed and carried out on every node.
  const troubled = new Set(problems.map((p) => p.path));
  if (troubled.size > 0) {
    for (const [path, prev] of previous) {
      if (records.has(path)) continue;
      if (troubled.has(".") || underAny(path, troubled)) records.set(path, prev);
    }
  }
  let removed = 0;
  for (const [path, prev] of previous) {
    if (records.has(path)) continue;
    removed++;
    if (prev.kind === "file") await forgetChunks(store, batch, path, prev.root, located);
    await store.files.remove(batch, path);
  }

  if (!summary) {
    await batch.flush();
    await kept.flush();
    const counts = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
    return {
      root: null,
      ...counts,
      hashedFiles,
      hashedBytes,
      removed,
      problems,
      durationMs: Date.now() - start,
      background,
    };
  }
  const sorted = [...records.entries()].sort(([a], [b]) => comparePaths(a, b));
  const dirEntries: DirEntry[] = sorted.map(([path, r]) => ({
    path,
    kind: r.kind,
    root: r.root,
    size: r.size,
    mode: r.mode,
    mtime: r.mtime,
    ...(r.kind === "symlink" ? { target: r.target } : {}),
  }));
  const tree = buildDirTree(dirEntries, kept);
  let files = 0, dirs = 0, symlinks = 0, bytes = 0;
  for (const [, r] of sorted) {
    if (r.kind === "file") {
      files++;
      bytes += r.size;
    } else if (r.kind === "dir") dirs++;
    else symlinks++;
  }
  // A partial scan read only some files: the next full scan must still treat files modified
  // after the last full scan began as possibly racy (see unchanged()), so `start` stays.
  await store.files.setLastScan(batch, {
    root: tree.root,
    files,
    bytes,
    time: Date.now(),
    start: only === null ? start : lastScanStart,
  });
  await batch.flush();
  await kept.flush();
  return {
    root: tree.root,
    files,
    dirs,
    symlinks,
    bytes,
    hashedFiles,
    hashedBytes,
    removed,
    problems,
    durationMs: Date.now() - start,
    background,
  };
}

/**
 * Queue the locations of chunks found in `path`; with the previous content's offsets (`old`),
 * a chunk still at its recorded offset is left as it is. `seen` collects the chunks found.
 */
async function recordLocations(
  store: LocalStore,
  batch: KvBatch,
  path: string,
  chunks: HashedFile["chunks"],
  located: Set<string>,
  old: Map<string, number> | null = null,
  seen: Set<string> | null = null,
): Promise<void> {
  for (const c of chunks) {
    const key = hashKey(c.hash);
    located.add(key);
    seen?.add(key);
    if (old?.get(key) === c.offset) continue;
    await store.locator.record(batch, c.hash, { path, offset: c.offset, length: c.length });
  }
}

/**
 * Forget the locations in `path` of chunks its previous content had and its new content has
 * not, except chunks located anew elsewhere during this scan (a forget queued after their new
 * location would undo it).
 */
async function forgetGone(
  store: LocalStore,
  batch: KvBatch,
  path: string,
  old: Map<string, number>,
  seen: Set<string>,
  located: Set<string>,
): Promise<void> {
  for (const key of old.keys()) {
    if (seen.has(key) || located.has(key)) continue;
    await store.locator.forget(batch, hashFromKey(key), path);
  }
}

/** Store a freshly hashed file: its tree nodes (and any chunks not yet streamed) and record. */
async function recordHashed(
  store: LocalStore,
  kept: KeptObjects,
  batch: KvBatch,
  path: string,
  hashed: HashedFile,
  located: Set<string>,
): Promise<LocalFileRecord> {
  for (const [hash, bytes] of hashed.nodes) kept.put(hash, bytes);
  await recordLocations(store, batch, path, hashed.chunks, located);
  const rec: LocalFileRecord = {
    kind: "file",
    size: hashed.size,
    mtime: hashed.mtime,
    mode: hashed.mode,
    ino: hashed.ino,
    root: hashed.root,
  };
  await store.files.put(batch, path, rec);
  return rec;
}

/**
 * Drop the chunk locations that point into the old content of `path`, except chunks located
 * anew during this scan.
 */
async function forgetChunks(
  store: LocalStore,
  batch: KvBatch,
  path: string,
  oldRoot: Hash,
  located: Set<string>,
) {
  try {
    for await (const c of walkFileChunks(oldRoot, store.packs)) {
      if (located.has(hashKey(c.hash))) continue;
      await store.locator.forget(batch, c.hash, path);
    }
  } catch {
    // The old tree is unreadable; its locations stay, and every read through them re-verifies
    // the bytes, so a stale one is detected when used.
  }
}
