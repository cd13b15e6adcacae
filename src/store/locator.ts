/**
 * The chunk locator: the synced tree is the main chunk store, so instead of copying chunk
 * bytes into the object store FileSync records where each chunk already lies (a file of the
 * tree, offset, length). Files change behind our back, so every read through the locator
 * re-hashes the bytes; a location that no longer holds the chunk is an error naming the hash,
 * never wrong bytes.
 */
import { type Hash, hashEquals, sha256 } from "../chunk/hash.ts";
import { StaleLocationError } from "./errors.ts";
import { openPositional, type PositionalFile, takeBuffer } from "../util/mod.ts";
import type { KvBatch } from "./kv_batch.ts";
import { type ChunkLocation, chunkLocationKey, parseChunkLocation } from "./schema.ts";

/** Maps chunk hashes to their place in the tree rooted at `root`. */
export class ChunkLocator {
  constructor(private readonly kv: Deno.Kv, private readonly root: string) {}

  /** Queue a location record in `batch`. */
  record(batch: KvBatch, hash: Hash, location: ChunkLocation): Promise<void> {
    return batch.set(chunkLocationKey(hash), location);
  }

  /** Queue removal of a location record, if it still points at `path`. */
  async forget(batch: KvBatch, hash: Hash, path: string): Promise<void> {
    const current = await this.lookup(hash);
    if (current && current.path === path) await batch.delete(chunkLocationKey(hash));
  }

  /** Where the chunk was last seen, or null. */
  async lookup(hash: Hash): Promise<ChunkLocation | null> {
    const entry = await this.kv.get(chunkLocationKey(hash));
    return entry.value === null ? null : parseChunkLocation(entry.value);
  }

  /**
   * The chunk's bytes, read from its file and verified. Returns null if no location is known;
   * throws StaleLocationError if the recorded place no longer holds the chunk. Reads go
   * through a few cached open handles; `fresh` opens the path anew.
   */
  async read(hash: Hash, opts: { fresh?: boolean } = {}): Promise<Uint8Array | null> {
    const loc = await this.lookup(hash);
    return loc ? await this.readAt(hash, loc, opts) : null;
  }

  /** read() at a location already looked up (LocalStore.readObject reads both indexes at once). */
  async readAt(
    hash: Hash,
    loc: ChunkLocation,
    opts: { fresh?: boolean } = {},
  ): Promise<Uint8Array> {
    if (opts.fresh) {
      // The file at the path now, not a handle kept from before (which may be of a file
      // since deleted or replaced): for callers that rely on the tree as a copy (GC).
      this.#files.drop(`${this.root}/${loc.path}`);
      const now = await this.#readVerified(hash, loc, false);
      if (now === null) throw new StaleLocationError(hash, loc.path, "bytes there have changed");
      return now;
    }
    // A cached handle may be of a file that was replaced since (a rename over it): if its bytes
    // do not verify, look again through a fresh open before calling the location stale.
    try {
      const cached = await this.#readVerified(hash, loc, true);
      if (cached !== null) return cached;
    } catch (e) {
      if (!(e instanceof StaleLocationError)) throw e;
    }
    this.#files.drop(`${this.root}/${loc.path}`);
    const fresh = await this.#readVerified(hash, loc, false);
    if (fresh !== null) return fresh;
    throw new StaleLocationError(hash, loc.path, "bytes there have changed");
  }

  /** Close the files kept open for reads. */
  close(): void {
    this.#files.clear();
  }

  /** The verified bytes at the location, or null if they do not match the hash. */
  async #readVerified(
    hash: Hash,
    loc: ChunkLocation,
    useCache: boolean,
  ): Promise<Uint8Array | null> {
    const bytes = await this.#files.readAt(`${this.root}/${loc.path}`, loc, useCache, hash);
    return hashEquals(sha256(bytes), hash) ? bytes : null;
  }

  readonly #files = new OpenFiles();
}

/** Files kept open for reads at once, and how long an unused one stays open, ms. */
const OPEN_FILES = 32;
const OPEN_FILE_IDLE_MS = 5_000;

interface OpenFile {
  /** Read at offsets (pread): any number of reads may share the handle at once. */
  file: PositionalFile;
  lastUse: number;
}

/**
 * A few recently read files kept open: serving a 256 MiB file chunk by chunk opened and closed
 * it 4,096 times. Handles are closed after a few idle seconds, so a deleted file's space is
 * not held for long (its bytes, read meanwhile, still verify against their hashes).
 */
class OpenFiles {
  #open = new Map<string, OpenFile>();
  #sweeper: ReturnType<typeof setInterval> | undefined;

  /** `loc.length` bytes at `loc.offset` of `abs`; StaleLocationError if unreadable or short. */
  async readAt(
    abs: string,
    loc: ChunkLocation,
    useCache: boolean,
    hash: Hash,
  ): Promise<Uint8Array> {
    let entry = useCache ? this.#open.get(abs) : undefined;
    if (!entry) {
      let file: PositionalFile;
      try {
        file = await openPositional(abs);
      } catch (e) {
        throw new StaleLocationError(hash, loc.path, `cannot open: ${(e as Error).message}`);
      }
      // Another read may have opened the same file meanwhile: keep one handle.
      const raced = this.#open.get(abs);
      if (raced && useCache) {
        file.close();
        entry = raced;
      } else {
        if (raced) this.drop(abs, raced);
        entry = { file, lastUse: Date.now() };
        this.#keep(abs, entry);
      }
    }
    entry.lastUse = Date.now();
    // Pooled: an objects server gives it back once sent (see util/buffer_pool.ts).
    const bytes = takeBuffer(loc.length);
    let whole: boolean;
    try {
      whole = await entry.file.readAt(loc.offset, bytes);
    } catch (e) {
      throw new StaleLocationError(hash, loc.path, `cannot read: ${(e as Error).message}`);
    }
    if (!whole) throw new StaleLocationError(hash, loc.path, "file is shorter now");
    return bytes;
  }

  /** Close the handle of `abs` (once the reads running on it are done). */
  drop(abs: string, entry: OpenFile | undefined = this.#open.get(abs)): void {
    if (!entry) return;
    if (this.#open.get(abs) === entry) this.#open.delete(abs);
    entry.file.close();
  }

  /** Close every handle. */
  clear(): void {
    for (const [abs, entry] of [...this.#open]) this.drop(abs, entry);
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  #keep(abs: string, entry: OpenFile): void {
    if (this.#open.size >= OPEN_FILES) {
      const [oldest, e] = this.#open.entries().next().value!;
      this.drop(oldest, e);
    }
    this.#open.set(abs, entry);
    if (this.#sweeper === undefined) {
      this.#sweeper = setInterval(() => this.#sweep(), OPEN_FILE_IDLE_MS);
      Deno.unrefTimer(this.#sweeper);
    }
  }

  #sweep(): void {
    const now = Date.now();
    for (const [abs, e] of [...this.#open]) {
      if (now - e.lastUse >= OPEN_FILE_IDLE_MS) this.drop(abs, e);
    }
    if (this.#open.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }
}
