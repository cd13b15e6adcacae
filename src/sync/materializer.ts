/**
 * The materializer: makes the disk match one committed index entry, crash-safely, without ever
 * destroying local content that was not committed.
 *
 * A file is assembled in a temp file in its own directory (`.filesync-tmp-<random>`, which the
 * scanner and the watcher ignore), from chunks found locally first (any file of the tree,
 * through the chunk locator, re-verified; then the pack store) and fetched remotely only when
 * missing, all missing chunks of a window in one fetch call and streamed straight to their
 * offsets (no copy parked in the pack store, no whole file in memory). The temp file is
 * fsynced, given its mode and mtime, renamed over the target and the directory fsynced: a crash
 * at any instant leaves the old file or the new one, never a torn one.
 *
 * Protection: an entry that exists on disk is replaced or removed only if (1) it still matches
 * what the last scan recorded (kind, size, mtime, inode; a symlink's target), so an edit the
 * scanner has not seen yet is never overwritten, and (2) its content was committed (equal to
 * the synced record or to the committed entry being materialized), so an edit that was scanned
 * but not uploaded is never overwritten either. Otherwise the answer is "local-changed": the
 * caller rescans and reconciles, and the edit is uploaded or kept as a conflict copy.
 *
 * Paths are validated with the index's path policy before any file system call, and nothing is
 * written through a symlink: every ancestor of the path must be a real directory below the
 * root (checked with lstat, then once more with realPath just before anything is changed).
 *
 * Afterwards the node's local records are brought in step without a rescan: the file index
 * (from an lstat after the rename, so the next scan sees the file as unchanged), the chunk
 * locations of the new content, and the synced state.
 */
import { type Hash, hashEquals, hashKey, sha256, toHex } from "../chunk/mod.ts";
import { ancestors, type IndexRecord, validatePath } from "../fsm/mod.ts";
import { decodeNode, EMPTY_FILE_ROOT, type NodeSource, walkFileChunks } from "../merkle/mod.ts";
import {
  CorruptObjectError,
  DATA_DIR_NAME,
  KeptObjects,
  KvBatch,
  type LocalFileRecord,
  type LocalStore,
  MissingObjectError,
} from "../store/mod.ts";
import { uniqueConflictCopyName } from "./conflict_names.ts";
import { sameContent } from "./reconcile.ts";
import { type SyncedRecord, SyncedState } from "./synced_state.ts";
import type { ExpectedEntry } from "./watcher.ts";
import { statFields } from "./walk.ts";
import { chunkOffsets, MAX_TRACKED_CHUNKS } from "./chunk_offsets.ts";
import { concatBytes } from "../wire/mod.ts";
import { type PreserveLog, preserveReplaced } from "./preserve.ts";
import { type PartialChunks, type Stripe, stripeOf } from "./partial_chunks.ts";
import { canCopyRanges, copyRange, readAt } from "../util/mod.ts";

/** Prefix of the materializer's temp files. */
export const TEMP_PREFIX = ".filesync-tmp-";

/**
 * Whether a file name (last path segment) is a materializer temp file. The scanner's walk and
 * the watcher must skip such names: they are never synced, and a crash can leave one behind
 * (sweepTempFiles removes leftovers at start-up).
 */
export function isTempName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX);
}

/** Where a committed file's missing pieces come from. */
export interface MaterializeSources {
  /** Remote Merkle nodes; asked only for nodes the pack store lacks. Bytes are verified. */
  nodes: NodeSource;
  /**
   * Fetch chunks from peers, calling `onChunk` once per chunk as it arrives (in any order,
   * possibly concurrently). Resolves when done. Should verify hashes; they are checked again.
   * `from`: ask these members first, and the others only for what they lack (the other
   * stripes of a file several members fetch, see Stripe).
   */
  fetchChunks(
    hashes: Hash[],
    onChunk: (hash: Hash, bytes: Uint8Array) => Promise<void>,
    from?: string[],
    signal?: AbortSignal,
  ): Promise<void>;
  /**
   * The bytes passed to `onChunk` were already checked against their hash (the object
   * fetcher verifies every object): not hashed a second time.
   */
  verified?: boolean;
  /**
   * A chunk already fetched into memory (a batch of small files fetched ahead), verified, or
   * undefined. Such a chunk was fetched because this node held it nowhere: it is written as it
   * is, without looking for a local copy first (a KV read per chunk, most of a small file's
   * lookups).
   */
  inMemory?(hash: Hash): Uint8Array | undefined;
}

/** Options of one materialization. */
export interface MaterializeOptions {
  /**
   * Called just before the entry appears, changes or disappears at its path, with what the
   * path will hold; the watcher uses it to drop the events of this node's own writes.
   */
  onWrite?: (path: string, expected: ExpectedEntry) => void;
  /**
   * Chunks handled per window (one fetchChunks call per window): bounds memory for huge
   * files. Default 4,096 (about 320 MiB of file at the default chunk size).
   */
  windowChunks?: number;
  /**
   * Commit this file's bookkeeping with other files' (see WriteGroup) instead of on its own;
   * the caller must call `group.finish()` once the files are written.
   */
  group?: WriteGroup;
  /**
   * This path's local and synced records as the caller already loaded them (the engine reads
   * all of them once per pass, and no scan runs during a pass): saves two KV reads per file.
   */
  known?: { local: LocalFileRecord | null; synced: SyncedRecord | null };
  /**
   * Before a file is replaced, deleted or turned into another kind, copy the chunks of its
   * version that the new content lacks into the packs, so the retained version stays
   * restorable from this node (see preserve.ts). Default true.
   */
  preserveReplaced?: boolean;
  /** Where preservation reports what it skipped. */
  log?: PreserveLog;
  /**
   * Offer the chunks fetched for this file to other members while it is assembled, and fetch
   * this node's stripe of it first when several members fetch it (see partial_chunks.ts): for
   * large files, in clusters of three or more.
   */
  share?: {
    chunks: PartialChunks;
    stripe: Stripe | null;
    /**
     * The stripe as it would be chosen now: asked while this node's stripe is fetched, which
     * is fetched again under the new one when the members fetching the file change.
     */
    restripe?: () => Stripe | null;
  };
}

/**
 * The bookkeeping of several materialized files, made durable together: the directory entries
 * of their renames are fsynced once per directory, then the pack objects, then one KV commit
 * records them all. Writing a thousand small files one commit and three fsyncs at a time left
 * the node mostly waiting on the disk. The order is kept: a KV record that says a file is on
 * disk is committed only after its directory entry is durable (else a crash could leave a
 * record of a file that is gone, and the scan would take that for a local delete).
 */
export class WriteGroup {
  readonly batch: KvBatch;
  #dirs = new Set<string>();
  #kept: KeptObjects[] = [];

  constructor(store: LocalStore) {
    this.batch = new KvBatch(store.kv, async () => {
      await this.#syncDirs();
      await Promise.all(this.#kept.splice(0).map((k) => k.flush()));
    });
  }

  /** Fsync this directory before the group's next commit. */
  syncDirLater(abs: string): void {
    this.#dirs.add(abs);
  }

  /** Make these pack objects durable before the group's next commit. */
  flushLater(kept: KeptObjects): void {
    this.#kept.push(kept);
  }

  /** Make everything of the group durable: directories, pack objects, then the records. */
  async finish(): Promise<void> {
    await this.#syncDirs();
    await this.batch.flush();
  }

  async #syncDirs(): Promise<void> {
    const dirs = [...this.#dirs];
    this.#dirs.clear();
    await Promise.all(dirs.map(syncDir));
  }
}

/** The refusal reason when a directory to delete or replace still holds entries. */
export const DIR_NOT_EMPTY = "directory is not empty";

/** What a materialization did. */
export type MaterializeStatus =
  /** The entry was created, replaced or had its mode/mtime changed. */
  | "written"
  /** The disk already matched; only local records were updated. */
  | "unchanged"
  /** A tombstone removed the entry from disk. */
  | "deleted"
  /** The disk holds local changes not yet committed: nothing was touched. Rescan. */
  | "local-changed";

export interface MaterializeResult {
  status: MaterializeStatus;
  /** Chunk bytes received from sources.fetchChunks. */
  bytesFetched: number;
  chunksFetched: number;
  /** For "local-changed": why. */
  reason?: string;
}

/** A materialization that could not be carried out. */
export class MaterializeError extends Error {
  override name = "MaterializeError";
  constructor(readonly path: string, message: string) {
    super(`${path}: ${message}`);
  }
}

/** An ancestor of the path is a symlink or not a directory: writing there is refused. */
export class UnsafePathError extends MaterializeError {
  override name = "UnsafePathError";
  constructor(
    path: string,
    readonly ancestor: string,
    readonly reason: "symlink" | "not-a-directory" | "outside-root",
  ) {
    super(
      path,
      reason === "symlink"
        ? `refusing to write through ${ancestor}, which is a symlink`
        : reason === "not-a-directory"
        ? `cannot write below ${ancestor}, which is not a directory`
        : `${ancestor} resolves outside the synced directory`,
    );
  }
}

/** A chunk from a remote source was corrupt, unexpected or never delivered. */
export class ChunkFetchError extends MaterializeError {
  override name = "ChunkFetchError";
  constructor(path: string, readonly hash: Hash, detail: string) {
    super(path, `chunk ${toHex(hash)}: ${detail}`);
  }
}

const DEFAULT_WINDOW_CHUNKS = 4096;
/** Files whose tree is more than one node: larger ones have their tree fetched ahead. */
const PREFETCH_TREE_BYTES = 16 << 20;
const OPEN_FILES = 16;

/*
 * Metadata calls (lstat, mkdir, chmod, utime, realpath, rename) and writes of chunks already in
 * memory are synchronous here. Each takes microseconds on a local file system, while an async
 * call waits for a thread-pool round trip and then a turn of a busy event loop: about 0.4 ms
 * apiece while a thousand small files were written eight at a time, and a file made ten of
 * them, so they were 60 % of each file's time (measured with per-step timers). Creating a
 * file, fsync and bulk writes stay async: those can take long (here a create took up to
 * 0.8 ms of kernel time) and run in parallel on the pool.
 */

function lstatOrNull(abs: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(abs);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return null;
    throw e;
  }
}

function kindOf(info: Deno.FileInfo): "file" | "dir" | "symlink" | "other" {
  return info.isSymlink ? "symlink" : info.isDirectory ? "dir" : info.isFile ? "file" : "other";
}

function parentOf(abs: string): string {
  return abs.slice(0, abs.lastIndexOf("/"));
}

/** fsync a directory, so a rename or removal in it is durable. */
async function syncDir(abs: string): Promise<void> {
  const dir = await Deno.open(abs, { read: true });
  try {
    await dir.sync();
  } finally {
    dir.close();
  }
}

/** A fresh temp-file name (ignored by every walk until renamed into place). */
export function tempName(): string {
  return TEMP_PREFIX + toHex(crypto.getRandomValues(new Uint8Array(8)));
}

/**
 * Check every ancestor of `path` with lstat: each must be a real directory. Missing ones are
 * created (mode 0755) when `create`; otherwise a missing ancestor makes the result false
 * ("the path cannot exist"). Throws UnsafePathError on a symlink or non-directory.
 */
export function checkAncestors(root: string, path: string, create: boolean): boolean {
  for (const a of ancestors(path)) {
    const abs = `${root}/${a}`;
    let info = lstatOrNull(abs);
    if (info === null) {
      if (!create) return false;
      try {
        Deno.mkdirSync(abs, { mode: 0o755 });
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      }
      info = Deno.lstatSync(abs);
    }
    if (info.isSymlink) throw new UnsafePathError(path, a, "symlink");
    if (!info.isDirectory) throw new UnsafePathError(path, a, "not-a-directory");
  }
  return true;
}

/** The parent directory must resolve to itself: no symlink anywhere on the way. */
function checkRealParent(root: string, path: string): void {
  const parentAbs = parentOf(`${root}/${path}`);
  const real = Deno.realPathSync(parentAbs);
  if (real !== parentAbs) {
    const rel = parentAbs.slice(root.length + 1) || ".";
    throw new UnsafePathError(path, rel, "outside-root");
  }
}

/**
 * Why the existing entry must not be replaced or removed, or null if it may be (see the module
 * comment: it must match the scan, and its content must have been committed).
 */
async function protection(
  abs: string,
  info: Deno.FileInfo,
  local: LocalFileRecord | null,
  synced: SyncedRecord | null,
  record: IndexRecord,
): Promise<string | null> {
  if (!local) return "an entry the scanner has not seen yet";
  const kind = kindOf(info);
  if (kind !== local.kind) return `now a ${kind}, the scan saw a ${local.kind}`;
  if (kind === "file") {
    const now = statFields(info);
    if (now.size !== local.size || now.mtime !== local.mtime || now.ino !== local.ino) {
      return "modified since the last scan";
    }
  } else if (kind === "symlink") {
    if (await Deno.readLink(abs) !== local.target) return "symlink changed since the last scan";
  }
  const committed = (synced !== null && sameContent(local, synced)) || sameContent(local, record);
  return committed ? null : "holds local changes that are not committed";
}

/** The record the scanner would make for the entry now at `abs` (content root given). */
function localRecordOf(abs: string, root: Hash): LocalFileRecord {
  const info = Deno.lstatSync(abs);
  const f = statFields(info);
  if (info.isSymlink) {
    const target = Deno.readLinkSync(abs);
    return { kind: "symlink", ...f, size: new TextEncoder().encode(target).length, root, target };
  }
  if (info.isDirectory) return { kind: "dir", ...f, size: 0, root: EMPTY_FILE_ROOT };
  return { kind: "file", ...f, root };
}

/**
 * Node source over the pack store, falling back to (and keeping) remote nodes. A node fetched
 * ahead into memory (a small file's root) is taken from there first: it was fetched because
 * this node lacked it, so looking in the packs would be a KV read that finds nothing.
 */
function nodeSourceFor(
  store: LocalStore,
  sources: MaterializeSources,
  kept: KeptObjects,
): NodeSource {
  const remote = sources.nodes;
  return {
    async getNode(hash: Hash): Promise<Uint8Array> {
      const ahead = sources.inMemory?.(hash);
      if (ahead !== undefined) {
        kept.put(hash, ahead); // kept, as a fetched node is: this node now serves it
        return ahead;
      }
      try {
        const held = await store.packs.get(hash);
        kept.note(hash); // pushed and maybe not durable yet: the records will name it
        return held;
      } catch (e) {
        if (!(e instanceof MissingObjectError) && !(e instanceof CorruptObjectError)) throw e;
      }
      const bytes = await remote.getNode(hash);
      if (!(bytes instanceof Uint8Array) || !hashEquals(sha256(bytes), hash)) {
        throw new CorruptObjectError(hash, "remote node bytes do not match the hash");
      }
      kept.put(hash, bytes);
      return bytes;
    },
  };
}

/**
 * Most tree nodes fetched ahead for one file, and so held at once (a level's worth, a few KiB
 * each): every level of a tree up to about 40 GiB of file at the default sizes.
 */
const MAX_PREFETCHED_NODES = 8192;

/**
 * Fetch the Merkle nodes of a file tree this node lacks, one level per fetch call, into the
 * packs. Walking a new file's tree asked for one node at a time, a round trip each: about half
 * a second for a 256 MiB file. Nodes already held are read locally; a tree larger than
 * MAX_PREFETCHED_NODES is left to the walk for the rest. Failures are left to the walk too,
 * which fetches node by node and reports a missing node with its path.
 */
async function prefetchFileTree(
  store: LocalStore,
  root: Hash,
  sources: MaterializeSources,
  kept: KeptObjects,
): Promise<void> {
  if (await store.packs.has(root)) {
    // Pushed before the commit, with the whole tree; the walk notes each node it reads.
    kept.note(root);
    return;
  }
  let level: Hash[] = [root];
  let budget = MAX_PREFETCHED_NODES;
  while (level.length > 0 && level.length <= budget) {
    budget -= level.length;
    const bytesOf = new Map<string, Uint8Array>();
    const missing: Hash[] = [];
    for (const h of level) {
      if (await store.packs.has(h)) {
        bytesOf.set(hashKey(h), await store.packs.get(h));
        kept.note(h);
      } else missing.push(h);
    }
    if (missing.length > 0) {
      await sources.fetchChunks(missing, (h, bytes) => {
        if (!sources.verified && !hashEquals(sha256(bytes), h)) return Promise.resolve();
        kept.put(h, bytes);
        bytesOf.set(hashKey(h), bytes);
        return Promise.resolve();
      }).catch(() => {});
    }
    const next: Hash[] = [];
    for (const h of level) {
      const bytes = bytesOf.get(hashKey(h));
      if (bytes === undefined) return;
      const node = decodeNode(bytes);
      if (node.type === "file-inner") { for (const c of node.children) next.push(c.hash); }
    }
    level = next;
  }
}

/**
 * Chunks of the file's previous version, by hash -> offset (see chunkOffsets), when the
 * previous version is still on disk as the scan saw it. Null when there is no such file, or
 * when it has too many chunks to track.
 */
async function previousChunks(
  store: LocalStore,
  previous: LocalFileRecord | null,
  present: boolean,
): Promise<Map<string, number> | null> {
  if (!previous || previous.kind !== "file" || !present) return null;
  return await chunkOffsets(previous.root, store.packs);
}

/** Where a chunk may be read locally: a file of the tree at an offset. */
interface Located {
  hash: Hash;
  /** Offset in the file being assembled. */
  offset: number;
  length: number;
  /** Source file (relative path) and offset, or null: try the packs, then the remote. */
  src: string | null;
  srcOffset: number;
  /** The pack index entry as looked up (null: not packed); undefined: not looked up. */
  packed?: unknown;
}

/** Bytes read at once from a source file: runs of contiguous chunks are read together. */
const MAX_RUN_BYTES = 8 << 20;
/** Chunks read from the packs at once by a materialization. */
const PACK_READ_RUN = 32;

/**
 * Reads chunks that are already on this node: from files of the tree (the previous version of
 * the same path, or wherever the chunk locator points), contiguous chunks of one source in one
 * read, every chunk verified against its hash (a stale location counts as missing); then from
 * the pack store. Keeps a few files open.
 */
class LocalChunks {
  #open = new Map<string, Deno.FsFile>();

  constructor(
    private readonly store: LocalStore,
    private readonly path: string,
    private readonly previous: Map<string, number> | null,
  ) {}

  /** Source locations for a window of chunks (previous version first, then the locator). */
  async locate(chunks: { hash: Hash; offset: number; length: number }[]): Promise<Located[]> {
    const out: Located[] = chunks.map((c) => ({ ...c, src: null, srcOffset: 0 }));
    const lookups: Located[] = [];
    for (const c of out) {
      const at = this.previous?.get(hashKey(c.hash));
      if (at !== undefined) {
        c.src = this.path;
        c.srcOffset = at;
      } else lookups.push(c);
    }
    // Both indexes of every chunk in one go (the store reads them in batches): a new file's
    // thousands of chunks cost a few hundred KV reads, not two sequential reads each.
    await Promise.all(lookups.map(async (c) => {
      const { location, packed } = await this.store.whereIs(c.hash);
      c.packed = packed;
      if (location && location.length === c.length) {
        c.src = location.path;
        c.srcOffset = location.offset;
      }
    }));
    return out;
  }

  /**
   * Write every chunk of `located` that can be read locally into `file`; returns the chunks
   * that could not (to fetch remotely).
   */
  async copy(located: Located[], file: Deno.FsFile): Promise<Located[]> {
    const failed: Located[] = [];
    const out = new PipelinedWriter(file);
    let i = 0;
    while (i < located.length) {
      const first = located[i];
      if (first.src === null) {
        // A run of chunks only the packs may hold (pushed before the commit, say): read them
        // several at a time (each is a lookup, a seek and a read), write them in order.
        let j = i + 1;
        while (j < located.length && located[j].src === null && j - i < PACK_READ_RUN) j++;
        const run = located.slice(i, j);
        const found = await Promise.all(run.map((c) => this.#fromPacks(c)));
        for (let k = 0; k < run.length; k++) {
          const bytes = found[k];
          if (bytes === null) failed.push(run[k]);
          else await out.write(run[k].offset, bytes);
        }
        i = j;
        continue;
      }
      // A run: same source file, contiguous in the source and (by construction) the target.
      let j = i + 1;
      let bytes = first.length;
      while (
        j < located.length && located[j].src === first.src &&
        located[j].srcOffset === located[j - 1].srcOffset + located[j - 1].length &&
        located[j].offset === located[j - 1].offset + located[j - 1].length &&
        bytes + located[j].length <= MAX_RUN_BYTES
      ) {
        bytes += located[j].length;
        j++;
      }
      const data = await this.#readAt(first.src, first.srcOffset, bytes);
      let pos = 0;
      let goodStart = -1;
      const flushGood = async (end: number) => {
        if (goodStart < 0) return;
        const from = located[goodStart];
        const at = from.srcOffset - first.srcOffset;
        await out.write(from.offset, data!.subarray(at, end));
        goodStart = -1;
      };
      for (let k = i; k < j; k++) {
        const c = located[k];
        const piece = data?.subarray(pos, pos + c.length);
        const ok = piece !== undefined && piece.length === c.length &&
          hashEquals(sha256(piece), c.hash);
        if (ok) {
          if (goodStart < 0) goodStart = k;
        } else {
          await flushGood(pos);
          const bytes = await this.#fromPacks(c);
          if (bytes === null) failed.push(c);
          else await out.write(c.offset, bytes);
        }
        pos += c.length;
      }
      await flushGood(pos);
      i = j;
    }
    await out.drain();
    return failed;
  }

  /** The chunk's bytes from the packs (verified there), or null if they do not hold it. */
  async #fromPacks(c: Located): Promise<Uint8Array | null> {
    if (c.packed === null && !this.store.packs.hasPending(c.hash)) return null;
    try {
      const bytes = await this.store.packs.getIndexed(c.hash, c.packed);
      return bytes.length === c.length ? bytes : null;
    } catch (e) {
      if (e instanceof CorruptObjectError || e instanceof MissingObjectError) return null;
      throw e;
    }
  }

  /** Up to `length` bytes at `offset` (fewer if the file is shorter), or null. */
  async #readAt(path: string, offset: number, length: number): Promise<Uint8Array | null> {
    let file = this.#open.get(path);
    if (!file) {
      try {
        file = await Deno.open(`${this.store.root}/${path}`, { read: true });
      } catch {
        return null;
      }
      if (this.#open.size >= OPEN_FILES) {
        const [oldest, f] = this.#open.entries().next().value!;
        f.close();
        this.#open.delete(oldest);
      }
      this.#open.set(path, file);
    }
    const out = new Uint8Array(length);
    await file.seek(offset, Deno.SeekMode.Start);
    let read = 0;
    while (read < length) {
      const n = await file.read(out.subarray(read));
      if (n === null) break;
      read += n;
    }
    return out.subarray(0, read);
  }

  close(): void {
    for (const f of this.#open.values()) f.close();
    this.#open.clear();
  }
}

/** Write a chunk held in memory (at most the chunker's maximum size) at `offset`, at once. */
function writeSmallAt(file: Deno.FsFile, offset: number, bytes: Uint8Array): void {
  file.seekSync(offset, Deno.SeekMode.Start);
  let written = 0;
  while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
}

/** Write `bytes` at `offset`; the caller runs one write at a time per file. */
async function writeAt(file: Deno.FsFile, offset: number, bytes: Uint8Array): Promise<void> {
  file.seekSync(offset, Deno.SeekMode.Start);
  let written = 0;
  while (written < bytes.length) written += await file.write(bytes.subarray(written));
}

/**
 * Positional writes with one write in flight while the caller reads and verifies the next
 * piece: disk writes overlap hashing, and at most two pieces are held in memory.
 */
class PipelinedWriter {
  #inflight: Promise<void> = Promise.resolve();

  constructor(private readonly file: Deno.FsFile) {}

  /** Start writing `bytes` (which the caller must not reuse) at `offset`. */
  async write(offset: number, bytes: Uint8Array): Promise<void> {
    await this.#inflight;
    this.#inflight = writeAt(this.file, offset, bytes);
    // Surface a failure at the next write or drain, not as an unhandled rejection.
    this.#inflight.catch(() => {});
  }

  /** Wait for the last write; throws its error. */
  drain(): Promise<void> {
    return this.#inflight;
  }
}

/**
 * Write the content of `record` into the open temp file: local chunks first, the missing ones
 * of each window fetched in one call and written at their offsets as they arrive.
 */
async function assemble(
  store: LocalStore,
  record: IndexRecord,
  sources: MaterializeSources,
  kept: KeptObjects,
  file: Deno.FsFile,
  previous: Map<string, number> | null,
  windowChunks: number,
  result: MaterializeResult,
  inPlace: Set<number> | null = null,
  share: Share | null = null,
): Promise<void> {
  const nodes = nodeSourceFor(store, sources, kept);
  const localChunks = new LocalChunks(store, record.path, previous);
  let size = 0;
  try {
    let window: { hash: Hash; offset: number; length: number }[] = [];
    /** Each window chunk's position in the file (its stripe depends on it), by offset. */
    const indexAt = new Map<number, number>();
    let index = 0;
    const flushWindow = async () => {
      const elsewhere: typeof window = [];
      for (const c of window) {
        const bytes = sources.inMemory?.(c.hash);
        if (bytes !== undefined && bytes.length === c.length) {
          writeSmallAt(file, c.offset, bytes);
          result.chunksFetched++;
          result.bytesFetched += bytes.length;
        } else elsewhere.push(c);
      }
      const failed = elsewhere.length === 0
        ? []
        : await localChunks.copy(await localChunks.locate(elsewhere), file);
      window = [];
      const missing: MissingChunks = new Map();
      for (const c of failed) {
        const key = hashKey(c.hash);
        const known = missing.get(key);
        if (known) known.offsets.push(c.offset);
        else {
          const index = indexAt.get(c.offset) ?? 0;
          missing.set(key, { hash: c.hash, length: c.length, offsets: [c.offset], index });
        }
      }
      indexAt.clear();
      if (missing.size > 0) {
        await fetchMissing(record.path, missing, sources, file, result, share);
      }
    };
    for await (const c of walkFileChunks(record.root, nodes)) {
      size = c.offset + c.length;
      const at = index++;
      if (inPlace?.has(c.offset)) continue; // already in the file, verified
      indexAt.set(c.offset, at);
      window.push(c);
      if (window.length >= windowChunks) await flushWindow();
    }
    await flushWindow();
  } finally {
    localChunks.close();
  }
  if (size !== record.size) {
    throw new MaterializeError(
      record.path,
      `the file tree holds ${size} bytes, the index says ${record.size}`,
    );
  }
}

/** Files at least this large are edited by copying the old file first (see copyThenVerify). */
const COPY_THEN_PATCH_BYTES = 16 << 20;

/** A chunk of the new version that the old version holds, at `oldOffset`. */
interface Reused {
  hash: Hash;
  /** Offset in the new version. */
  offset: number;
  length: number;
  oldOffset: number;
}

/**
 * Start the new version of a large file with kernel copies of the old one's bytes (no bytes
 * through JavaScript: 110 ms for 256 MiB here, where writing them took 540 ms). Where
 * copy_file_range is available (copyRange), each run of reused chunks is copied straight to
 * its new offset, shifted or not (the tail after an insert or a delete); elsewhere the whole
 * old file is copied, which places the chunks that did not move. Meanwhile every reused chunk
 * is read and hashed from the old file. The old file is the same before and after (size,
 * mtime, inode and ctime, which no writer can set back), so the copy holds the bytes that were
 * verified. Returns the offsets of the chunks in place and verified; assemble() writes only
 * the rest, and the caller truncates to the new size. Verifying costs a read and a hash, but a
 * file changed behind our back within one mtime tick would otherwise turn into a silently
 * wrong copy. Null (nothing copied) if the old file cannot be copied.
 */
async function copyThenVerify(
  store: LocalStore,
  record: IndexRecord,
  sources: MaterializeSources,
  kept: KeptObjects,
  abs: string,
  tmpAbs: string,
  file: Deno.FsFile,
  previous: Map<string, number>,
): Promise<Set<number> | null> {
  const before = lstatOrNull(abs);
  if (before === null || !before.isFile) return null;
  // Without range copies, the whole file is copied while the new tree is walked.
  const wholeCopy = canCopyRanges()
    ? null
    : Deno.copyFile(abs, tmpAbs).then(() => true, () => false);
  // Reused chunks in runs contiguous in both versions (so at one shift), at most
  // MAX_RUN_BYTES each: a run is read and verified at once.
  const runs: Reused[][] = [];
  let run: Reused[] = [];
  let runBytes = 0;
  for await (const c of walkFileChunks(record.root, nodeSourceFor(store, sources, kept))) {
    const oldOffset = previous.get(hashKey(c.hash));
    if (oldOffset === undefined) continue;
    const last = run.at(-1);
    if (
      last &&
      (last.offset + last.length !== c.offset || last.oldOffset + last.length !== oldOffset ||
        runBytes + c.length > MAX_RUN_BYTES)
    ) {
      runs.push(run);
      run = [];
      runBytes = 0;
    }
    run.push({ ...c, oldOffset });
    runBytes += c.length;
  }
  if (run.length > 0) runs.push(run);
  const verified = new Set<number>();
  const checked = verifyRuns(abs, runs, verified).catch(() => verified.clear());
  let inPlace = wholeCopy === null ? await copySpans(abs, tmpAbs, runs) : null;
  if (inPlace !== null && inPlace.size === 0 && runs.length > 0) {
    // The kernel refused every range copy (a file system without it, a sandbox): copy the
    // whole file instead, which places at least the chunks that did not move.
    inPlace = null;
  }
  if (inPlace === null) {
    if (await (wholeCopy ?? Deno.copyFile(abs, tmpAbs).then(() => true, () => false))) {
      inPlace = new Set(runs.filter((r) => r[0].offset === r[0].oldOffset));
    } else {
      await checked;
      await file.truncate(0);
      return null;
    }
  }
  await checked;
  const after = lstatOrNull(abs);
  const unchanged = after !== null && sameStat(before, after) &&
    before.ctime?.getTime() === after.ctime?.getTime();
  if (!unchanged) return new Set(); // the copy may hold other bytes: write every chunk
  // A run not copied into place is written by assemble() like any other chunk.
  for (const r of runs) {
    if (!inPlace.has(r)) { for (const c of r) verified.delete(c.offset); }
  }
  return verified;
}

/**
 * Copy the runs of reused chunks from the old file to their offsets in the new one, in the
 * kernel: runs at one shift that follow each other go in one call, so an edit costs one copy
 * before it and one after it, and no byte is copied twice. Returns the runs now in place.
 */
async function copySpans(abs: string, tmpAbs: string, runs: Reused[][]): Promise<Set<Reused[]>> {
  const done = new Set<Reused[]>();
  let i = 0;
  while (i < runs.length) {
    const first = runs[i][0];
    let j = i + 1;
    let end = runs[i].at(-1)!.offset + runs[i].at(-1)!.length;
    while (
      j < runs.length && runs[j][0].offset === end &&
      runs[j][0].oldOffset - runs[j][0].offset === first.oldOffset - first.offset
    ) {
      end = runs[j].at(-1)!.offset + runs[j].at(-1)!.length;
      j++;
    }
    if (await copyRange(abs, first.oldOffset, tmpAbs, first.offset, end - first.offset)) {
      for (let k = i; k < j; k++) done.add(runs[k]);
    }
    i = j;
  }
  return done;
}

/**
 * Hash each run of reused chunks as read from the old file at `abs` (at their old offsets),
 * adding the new offsets of the chunks that match to `verified`. The next run is read while
 * the current one is hashed, through a second handle.
 */
async function verifyRuns(abs: string, runs: Reused[][], verified: Set<number>): Promise<void> {
  if (runs.length === 0) return;
  const first = await Deno.open(abs, { read: true });
  let second: Deno.FsFile;
  try {
    second = await Deno.open(abs, { read: true });
  } catch (e) {
    first.close();
    throw e;
  }
  const handles = [first, second];
  let next: Promise<Uint8Array | null> = Promise.resolve(null);
  try {
    const read = (i: number) => {
      const r = runs[i];
      const data = new Uint8Array(r.at(-1)!.oldOffset + r.at(-1)!.length - r[0].oldOffset);
      return readAt(handles[i % 2], r[0].oldOffset, data).then((whole) => whole ? data : null);
    };
    next = read(0);
    for (let i = 0; i < runs.length; i++) {
      const data = await next;
      if (i + 1 < runs.length) next = read(i + 1);
      if (data === null) continue;
      const start = runs[i][0].oldOffset;
      for (const c of runs[i]) {
        const at = c.oldOffset - start;
        if (hashEquals(sha256(data.subarray(at, at + c.length)), c.hash)) verified.add(c.offset);
      }
    }
  } finally {
    await next.catch(() => {}); // a read still in flight when a hash step threw
    for (const h of handles) h.close();
  }
}

/** Contiguous bytes gathered into one write, and bytes being written before add() waits. */
const COALESCE_RUN_BYTES = 4 << 20;
const COALESCE_INFLIGHT_BYTES = 16 << 20;

/**
 * Writes chunks as they arrive from peers, gathering contiguous ones into runs of a few MiB:
 * a 64 KiB seek + write per chunk, awaited before the fetcher read the next one, held a large
 * file's transfer to about 85 MiB/s. add() returns at once unless too many bytes are still
 * being written (memory stays bounded); drain() writes the rest and reports the first error.
 * Writes run one at a time, so seeks and writes never interleave.
 */
class CoalescingWriter {
  #chain: Promise<void> = Promise.resolve();
  #runStart = 0;
  #parts: Uint8Array[] = [];
  #hashes: Hash[] = [];
  #runBytes = 0;
  #inflight = 0;
  #error: unknown = null;

  /** `onWritten` hears of each chunk once its bytes are in the file. */
  constructor(
    private readonly file: Deno.FsFile,
    private readonly onWritten?: (hash: Hash, offset: number, length: number) => void,
  ) {}

  async add(offset: number, bytes: Uint8Array, hash: Hash): Promise<void> {
    const contiguous = this.#parts.length > 0 && offset === this.#runStart + this.#runBytes;
    if (!contiguous || this.#runBytes + bytes.length > COALESCE_RUN_BYTES) this.#flushRun();
    if (this.#parts.length === 0) this.#runStart = offset;
    this.#parts.push(bytes);
    this.#hashes.push(hash);
    this.#runBytes += bytes.length;
    if (this.#inflight > COALESCE_INFLIGHT_BYTES) await this.#chain;
    if (this.#error !== null) throw this.#error;
  }

  async drain(): Promise<void> {
    this.#flushRun();
    await this.#chain;
    if (this.#error !== null) throw this.#error;
  }

  #flushRun(): void {
    if (this.#parts.length === 0) return;
    const at = this.#runStart;
    const lengths = this.#parts.map((p) => p.length);
    const hashes = this.#hashes;
    const data = this.#parts.length === 1 ? this.#parts[0] : concatBytes(this.#parts);
    this.#parts = [];
    this.#hashes = [];
    this.#runBytes = 0;
    this.#inflight += data.length;
    // After a failed write the rest are skipped; the first error reaches add() or drain()
    // (kept aside, so the chain itself never rejects unobserved).
    this.#chain = this.#chain
      .then(async () => {
        if (this.#error !== null) return;
        await writeAt(this.file, at, data);
        let offset = at;
        hashes.forEach((hash, i) => {
          this.onWritten?.(hash, offset, lengths[i]);
          offset += lengths[i];
        });
      })
      .catch((e) => {
        this.#error ??= e;
      })
      .finally(() => {
        this.#inflight -= data.length;
      });
  }
}

/** A file being assembled whose fetched chunks are offered to other members meanwhile. */
interface Share {
  chunks: PartialChunks;
  /** The temp file the chunks are written to. */
  tmpAbs: string;
  stripe: Stripe | null;
  restripe?: () => Stripe | null;
}

/** How often the stripe is chosen again while this node's stripe is fetched, ms. */
const RESTRIPE_CHECK_MS = 250;

function sameStripe(a: Stripe | null, b: Stripe | null): boolean {
  if (a === null || b === null) return a === b;
  return a.index === b.index && a.count === b.count && a.blockChunks === b.blockChunks &&
    a.others.join() === b.others.join();
}

/**
 * Fetch `own` (this node's stripe), aborted as soon as `share.restripe()` differs from
 * `stripe`: true if it ended that way (the caller splits what is left again), false if every
 * chunk was fetched.
 */
async function fetchOwnStripe(
  own: Hash[],
  onChunk: (hash: Hash, bytes: Uint8Array) => Promise<void>,
  sources: MaterializeSources,
  share: Share | null,
  stripe: Stripe | null,
): Promise<boolean> {
  const restripe = share?.restripe;
  if (!restripe) {
    await sources.fetchChunks(own, onChunk);
    return false;
  }
  const changed = new AbortController();
  const timer = setInterval(() => {
    if (!sameStripe(restripe(), stripe)) changed.abort(new Error("the fetching members changed"));
  }, RESTRIPE_CHECK_MS);
  try {
    await sources.fetchChunks(own, onChunk, undefined, changed.signal);
    return false;
  } catch (e) {
    if (!changed.signal.aborted) throw e;
    return true;
  } finally {
    clearInterval(timer);
  }
}

/** Chunks to fetch for a file, by hash key: where each goes, and its first chunk index. */
type MissingChunks = Map<string, { hash: Hash; length: number; offsets: number[]; index: number }>;

async function fetchMissing(
  path: string,
  missing: MissingChunks,
  sources: MaterializeSources,
  file: Deno.FsFile,
  result: MaterializeResult,
  share: Share | null,
): Promise<void> {
  const received = new Set<string>();
  const out = new CoalescingWriter(
    file,
    share ? (hash, at, length) => share.chunks.add(hash, share.tmpAbs, at, length) : undefined,
  );
  const onChunk = async (hash: Hash, bytes: Uint8Array): Promise<void> => {
    const key = hashKey(hash);
    const want = missing.get(key);
    if (!want) throw new ChunkFetchError(path, hash, "was not asked for");
    if (received.has(key)) return;
    if (
      bytes.length !== want.length || (!sources.verified && !hashEquals(sha256(bytes), hash))
    ) {
      throw new ChunkFetchError(path, hash, "received bytes do not match");
    }
    received.add(key);
    result.chunksFetched++;
    result.bytesFetched += bytes.length;
    for (const offset of want.offsets) await out.add(offset, bytes, hash);
  };
  // Own stripe first, then the rest (which the other fetching members are getting meanwhile).
  // A member that joins, or is first seen, while this node fetches its stripe changes the
  // stripes: what is left of ours is split again. (A member that started a large file before
  // it knew of the other fetched all of it from the origin.)
  let stripe = share?.stripe ?? null;
  let todo = [...missing.values()];
  let rest: Hash[] = [];
  const notReceived = (h: Hash) => !received.has(hashKey(h));
  try {
    for (;;) {
      const own: Hash[] = [];
      rest = [];
      for (const m of todo) {
        const mine = !stripe ||
          stripeOf(m.index, stripe.count, stripe.blockChunks) === stripe.index;
        (mine ? own : rest).push(m.hash);
      }
      // The others fetch our stripe from us: they wait for what is on its way here.
      if (share && stripe) share.chunks.expect(share.tmpAbs, own);
      let restriped: boolean;
      try {
        restriped = own.length > 0 &&
          await fetchOwnStripe(own, onChunk, sources, share, stripe);
      } finally {
        share?.chunks.unexpect(share.tmpAbs, own.filter(notReceived));
      }
      if (!restriped) break;
      stripe = share!.restripe!();
      todo = todo.filter((m) => notReceived(m.hash));
    }
    // The other stripes from the members that fetched them first (they answer `missing` for
    // what they do not hold, and do not receive soon, which the origin then sends).
    const left = rest.filter(notReceived);
    if (left.length > 0) await sources.fetchChunks(left, onChunk, stripe?.others);
  } finally {
    await out.drain();
  }
  for (const m of missing.values()) {
    if (!received.has(hashKey(m.hash))) {
      throw new ChunkFetchError(path, m.hash, "no source delivered it");
    }
  }
}

/** Queue removal of the chunk locations that point into `path`'s old content. */
async function forgetChunks(store: LocalStore, batch: KvBatch, path: string, root: Hash) {
  try {
    for await (const c of walkFileChunks(root, store.packs)) {
      await store.locator.forget(batch, c.hash, path);
    }
  } catch {
    // Old tree unreadable: its locations stay, and every read through them re-verifies.
  }
}

/**
 * Record what is now on disk at `record.path`: file index entry, chunk locations, synced
 * state. With the previous version's chunk map, only locations that changed are written (an
 * edit in place rewrites a few, not all); without it, the old ones are forgotten and all new
 * ones recorded. Pack objects are made durable before any KV entry that refers to them.
 */
async function recordLocal(
  store: LocalStore,
  record: IndexRecord,
  previous: LocalFileRecord | null,
  now: LocalFileRecord | null,
  previousChunks: Map<string, number> | null = null,
  group?: WriteGroup,
  kept?: KeptObjects,
): Promise<void> {
  const synced = new SyncedState(store.kv);
  // The tree nodes this write put into the packs are durable before the records that refer
  // to them, and only those (see KeptObjects).
  if (group && kept) group.flushLater(kept);
  const batch = group?.batch ?? new KvBatch(store.kv, async () => await kept?.flush());
  const path = record.path;
  const contentChanged = !now || !previous || !sameContent(previous, now);
  if (contentChanged) {
    const incremental = previousChunks !== null && now !== null && now.kind === "file";
    if (incremental) {
      const kept = new Set<string>();
      for await (const c of walkFileChunks(now.root, store.packs)) {
        const key = hashKey(c.hash);
        if (kept.size < MAX_TRACKED_CHUNKS) kept.add(key);
        if (previousChunks.get(key) === c.offset) continue; // still right where recorded
        await store.locator.record(batch, c.hash, { path, offset: c.offset, length: c.length });
      }
      if (kept.size < MAX_TRACKED_CHUNKS) {
        for await (const c of walkFileChunks(previous!.root, store.packs)) {
          if (!kept.has(hashKey(c.hash))) await store.locator.forget(batch, c.hash, path);
        }
      }
    } else {
      if (previous && previous.kind === "file") {
        await forgetChunks(store, batch, path, previous.root);
      }
      if (now && now.kind === "file") {
        for await (const c of walkFileChunks(now.root, store.packs)) {
          await store.locator.record(batch, c.hash, { path, offset: c.offset, length: c.length });
        }
      }
    }
  }
  if (now) await store.files.put(batch, path, now);
  else await store.files.remove(batch, path);
  await synced.adopt(batch, path, record);
  if (!group) await batch.flush();
}

/** Make the disk match one committed entry. See the module comment. */
export async function materialize(
  store: LocalStore,
  record: IndexRecord,
  sources: MaterializeSources,
  opts: MaterializeOptions = {},
): Promise<MaterializeResult> {
  const path = validatePath(record.path);
  const result: MaterializeResult = { status: "unchanged", bytesFetched: 0, chunksFetched: 0 };
  const abs = `${store.root}/${path}`;
  const reachable = checkAncestors(store.root, path, !record.deleted);
  const current = reachable ? lstatOrNull(abs) : null;
  const local = opts.known ? opts.known.local : await store.files.get(path);
  const synced = opts.known ? opts.known.synced : await new SyncedState(store.kv).get(path);

  const refuse = (reason: string): MaterializeResult => ({
    ...result,
    status: "local-changed",
    reason,
  });
  /** Null if the existing entry may be replaced or removed, else the refusal. */
  const guard = async (): Promise<MaterializeResult | null> => {
    if (!current) return null;
    const why = await protection(abs, current, local, synced, record);
    return why ? refuse(why) : null;
  };

  if (record.deleted) {
    if (!current) {
      await recordLocal(store, record, local, null);
      return result;
    }
    const refused = await guard();
    if (refused) return refused;
    checkRealParent(store.root, path);
    const release = await preserveOld(store, path, current, local, null, opts);
    try {
      opts.onWrite?.(path, { kind: "absent" });
      try {
        await Deno.remove(abs);
      } catch (e) {
        if (current.isDirectory && !(e instanceof Deno.errors.NotFound)) {
          return refuse(DIR_NOT_EMPTY);
        }
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      await syncDir(parentOf(abs));
    } finally {
      release();
    }
    await recordLocal(store, record, local, null);
    return { ...result, status: "deleted" };
  }

  if (record.kind === "dir") {
    return await materializeDir(store, record, current, local, guard, opts);
  }

  // Same kind and content already on disk: at most mode and mtime to set, in place.
  if (current && local && local.kind === record.kind && sameContent(local, record)) {
    const refused = await guard();
    if (refused) return refused;
    let touched = false;
    if (record.kind === "file") {
      const f = statFields(current);
      if (f.mode !== record.mode || f.mtime !== record.mtime) {
        opts.onWrite?.(path, { kind: "file", size: record.size, mtime: record.mtime });
        if (f.mode !== record.mode) await Deno.chmod(abs, record.mode);
        if (f.mtime !== record.mtime) await Deno.utime(abs, new Date(), new Date(record.mtime));
        touched = true;
      }
    }
    await recordLocal(
      store,
      record,
      local,
      localRecordOf(abs, local.root),
      null,
      opts.group,
    );
    return { ...result, status: touched ? "written" : "unchanged" };
  }

  const refused = await guard();
  if (refused) return refused;
  const dirAbs = parentOf(abs);
  const tmpAbs = `${dirAbs}/${tempName()}`;
  // Tree nodes this write fetches are kept in the packs: this node then serves them too.
  const kept = new KeptObjects(store.packs);
  let renamed = false;
  let previous: Map<string, number> | null = null;
  let release = () => {};
  try {
    if (record.kind === "symlink") {
      if (record.target === undefined) throw new MaterializeError(path, "symlink without target");
      await Deno.symlink(record.target, tmpAbs);
    } else {
      const file = await Deno.open(tmpAbs, {
        read: true,
        write: true,
        createNew: true,
        mode: 0o600,
      });
      try {
        if (!hashEquals(record.root, EMPTY_FILE_ROOT)) {
          if (record.size > PREFETCH_TREE_BYTES) {
            await prefetchFileTree(store, record.root, sources, kept).catch(() => {});
          }
          previous = await previousChunks(store, local, current !== null && current.isFile);
          const inPlace = previous !== null && current !== null &&
              current.size >= COPY_THEN_PATCH_BYTES
            ? await copyThenVerify(store, record, sources, kept, abs, tmpAbs, file, previous)
            : null;
          await assemble(
            store,
            record,
            sources,
            kept,
            file,
            previous,
            opts.windowChunks ?? DEFAULT_WINDOW_CHUNKS,
            result,
            inPlace,
            opts.share ? { ...opts.share, tmpAbs } : null,
          );
          if (inPlace !== null) await file.truncate(record.size);
        } else if (record.size !== 0) {
          throw new MaterializeError(path, `empty file tree but size ${record.size}`);
        }
        Deno.chmodSync(tmpAbs, record.mode);
        file.utimeSync(new Date(), new Date(record.mtime));
        // The old version's chunks are kept while the new file is flushed: both only have to
        // be durable before the rename.
        const syncing = file.sync();
        syncing.catch(() => {}); // awaited below, whatever preserving does
        try {
          release = await preserveOld(store, path, current, local, record.root, opts);
        } finally {
          await syncing;
        }
      } finally {
        file.close();
      }
    }
    // Before the look below, so that preserving a large file does not widen the window
    // between that check and the rename.
    if (record.kind === "symlink") {
      release = await preserveOld(store, path, current, local, null, opts);
    }
    // The disk may have changed while the content was assembled: look again.
    const again = lstatOrNull(abs);
    if (!sameStat(current, again)) return refuse("changed while the new version was written");
    checkRealParent(store.root, path);
    if (again?.isDirectory) {
      try {
        await Deno.remove(abs);
      } catch {
        return refuse(DIR_NOT_EMPTY);
      }
    }
    opts.onWrite?.(
      path,
      record.kind === "symlink"
        ? { kind: "symlink", target: record.target }
        : { kind: "file", size: record.size, mtime: record.mtime },
    );
    Deno.renameSync(tmpAbs, abs);
    renamed = true;
    if (opts.group) opts.group.syncDirLater(dirAbs);
    else await syncDir(dirAbs);
  } finally {
    opts.share?.chunks.forget(tmpAbs);
    release();
    if (!renamed) await Deno.remove(tmpAbs).catch(() => {});
  }
  await recordLocal(
    store,
    record,
    local,
    localRecordOf(abs, record.root),
    previous,
    opts.group,
    kept,
  );
  return { ...result, status: "written" };
}

/**
 * Preserve the committed version of the file now at `path` before it is replaced by content
 * `newRoot` (null: no file), if it is a file and preservation is on; returns the function that
 * unpins the preserved chunks, to call once the old file is gone. The caller has checked with
 * protection() that the file is the version `local` records, and that it was committed.
 */
async function preserveOld(
  store: LocalStore,
  path: string,
  current: Deno.FileInfo | null,
  local: LocalFileRecord | null,
  newRoot: Hash | null,
  opts: MaterializeOptions,
): Promise<() => void> {
  const none = () => {};
  if (opts.preserveReplaced === false || !current?.isFile || local?.kind !== "file") return none;
  if (newRoot !== null && hashEquals(newRoot, local.root)) return none;
  const abs = `${store.root}/${path}`;
  return (await preserveReplaced(store, path, abs, local.root, newRoot, opts.log)).release;
}

/** Same entry as before: both absent, or same kind, size, mtime and inode. */
function sameStat(a: Deno.FileInfo | null, b: Deno.FileInfo | null): boolean {
  if (a === null || b === null) return a === b;
  const fa = statFields(a), fb = statFields(b);
  return kindOf(a) === kindOf(b) && fa.size === fb.size && fa.mtime === fb.mtime &&
    fa.ino === fb.ino;
}

async function materializeDir(
  store: LocalStore,
  record: IndexRecord,
  current: Deno.FileInfo | null,
  local: LocalFileRecord | null,
  guard: () => Promise<MaterializeResult | null>,
  opts: MaterializeOptions,
): Promise<MaterializeResult> {
  const abs = `${store.root}/${record.path}`;
  const result: MaterializeResult = { status: "unchanged", bytesFetched: 0, chunksFetched: 0 };
  let touched = false;
  checkRealParent(store.root, record.path);
  if (current && !current.isDirectory) {
    const refused = await guard();
    if (refused) return refused;
    const release = await preserveOld(store, record.path, current, local, null, opts);
    try {
      opts.onWrite?.(record.path, { kind: "dir" });
      await Deno.remove(abs);
    } finally {
      release();
    }
    current = null;
  }
  if (!current) {
    opts.onWrite?.(record.path, { kind: "dir" });
    Deno.mkdirSync(abs, { mode: record.mode });
    touched = true;
  }
  const info = Deno.lstatSync(abs);
  if (((info.mode ?? 0) & 0o7777) !== record.mode) {
    if (!touched) opts.onWrite?.(record.path, { kind: "dir" });
    Deno.chmodSync(abs, record.mode);
    touched = true;
  }
  if (touched) await syncDir(parentOf(abs));
  await recordLocal(store, record, local, localRecordOf(abs, EMPTY_FILE_ROOT));
  return { ...result, status: touched ? "written" : "unchanged" };
}

/**
 * Keep the local entry at `path` as a conflict copy: rename it (a directory with everything
 * inside) to a free conflict copy name next to it and return that path. `exists` can add
 * names taken elsewhere (the committed index). Local records are left for the next scan,
 * which sees the copy as a new entry to upload; the path itself is then free for the
 * committed entry.
 */
export async function keepConflictCopy(
  store: LocalStore,
  path: string,
  nodeName: string,
  time: Date | number,
  exists?: (candidate: string) => boolean | Promise<boolean>,
): Promise<string> {
  validatePath(path);
  checkAncestors(store.root, path, false);
  const copy = await uniqueConflictCopyName(path, nodeName, time, async (candidate) => {
    if (lstatOrNull(`${store.root}/${candidate}`) !== null) return true;
    return exists ? await exists(candidate) : false;
  });
  validatePath(copy);
  const abs = `${store.root}/${path}`;
  checkRealParent(store.root, path);
  await Deno.rename(abs, `${store.root}/${copy}`);
  await syncDir(parentOf(abs));
  return copy;
}

/**
 * Remove temp files left by a crash, anywhere in the tree (not following symlinks, skipping
 * the `.filesync` data folder). Call at start-up, before any materialization runs. Returns
 * the number removed.
 */
export async function sweepTempFiles(root: string): Promise<number> {
  let removed = 0;
  const walk = async (dir: string): Promise<void> => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch {
      return;
    }
    for (const e of entries) {
      const abs = `${dir}/${e.name}`;
      if (isTempName(e.name) && !e.isDirectory) {
        await Deno.remove(abs).catch(() => {});
        removed++;
      } else if (e.isDirectory && !(dir === root && e.name === DATA_DIR_NAME)) {
        await walk(abs);
      }
    }
  };
  await walk(root);
  return removed;
}
