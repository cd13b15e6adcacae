/**
 * A node's local data, all under `<dir>/.filesync/` (never synced): the Deno KV database
 * (file index, chunk locator, object index, snapshots) and the pack files.
 */
import { ChunkLocator } from "./locator.ts";
import { FileIndex } from "./file_index.ts";
import type { Hash } from "../chunk/hash.ts";
import { collectGarbage, type GcOptions, type GcStats } from "./gc.ts";
import { PackStore, type PackStoreOptions } from "./packs.ts";
import { Pins } from "./pins.ts";
import { Snapshots } from "./snapshots.ts";
import { type ChunkLocation, chunkLocationKey, objectKey, parseChunkLocation } from "./schema.ts";
import { StaleLocationError } from "./errors.ts";
import { KV_GET_MANY } from "../util/mod.ts";

/** Name of the per-directory data folder; always excluded from scans and sync. */
export const DATA_DIR_NAME = ".filesync";

/** Options of LocalStore.open; all optional. */
export type LocalStoreOptions = PackStoreOptions;

/** Everything a node keeps locally about one synced directory. */
export class LocalStore {
  /** Objects garbage collection must keep for now (see pins.ts). */
  readonly pins = new Pins();

  private constructor(
    /** Absolute path of the synced directory. */
    readonly root: string,
    /** Absolute path of its data folder. */
    readonly dataDir: string,
    readonly kv: Deno.Kv,
    readonly packs: PackStore,
    readonly files: FileIndex,
    readonly locator: ChunkLocator,
    readonly snapshots: Snapshots,
  ) {}

  /**
   * An object (chunk or tree node) from the tree, through the chunk locator, or else from the
   * packs; null if neither holds it. Both indexes are read in one KV operation: serving
   * thousands of small objects was bound by one KV read after another.
   */
  async readObject(hash: Hash): Promise<Uint8Array | null> {
    const [loc, packed] = await this.#lookUp(hash);
    if (loc.value !== null) {
      try {
        return await this.locator.readAt(hash, parseChunkLocation(loc.value));
      } catch (e) {
        if (!(e instanceof StaleLocationError)) throw e;
      }
    }
    if (packed.value === null && !this.packs.hasPending(hash)) return null;
    return await this.packs.getIndexed(hash, packed.value);
  }

  /**
   * Where the object may be read here: its chunk location in the tree (null if none), and
   * its pack index entry (`packed`: pass it to packs.getIndexed; null if not packed, though a
   * pending object is still readable). Batched as readObject's lookups: a materializer
   * placing thousands of chunks of a new file asks for all of them at once.
   */
  async whereIs(hash: Hash): Promise<{ location: ChunkLocation | null; packed: unknown }> {
    const [loc, packed] = await this.#lookUp(hash);
    return {
      location: loc.value === null ? null : parseChunkLocation(loc.value),
      packed: packed.value,
    };
  }

  /** Whether this node holds the object (in a file of the tree, by the locator, or packed). */
  async holds(hash: Hash): Promise<boolean> {
    if (this.packs.hasPending(hash)) return true;
    const [loc, packed] = await this.#lookUp(hash);
    return loc.value !== null || packed.value !== null;
  }

  /**
   * An object's chunk-locator and pack-index entries. Lookups asked for in the same tick are
   * read together, five objects (ten keys, Deno KV's most) per KV operation: a server with a
   * deep pipeline of small objects was bound by one KV read after another.
   */
  #lookUp(hash: Hash): Promise<[Deno.KvEntryMaybe<unknown>, Deno.KvEntryMaybe<unknown>]> {
    return new Promise((resolve, reject) => {
      this.#lookups.push({ hash, resolve, reject });
      if (this.#lookups.length === 1) queueMicrotask(() => this.#runLookups());
    });
  }

  #lookups: {
    hash: Hash;
    resolve: (entries: [Deno.KvEntryMaybe<unknown>, Deno.KvEntryMaybe<unknown>]) => void;
    reject: (e: unknown) => void;
  }[] = [];

  #runLookups(): void {
    const all = this.#lookups;
    this.#lookups = [];
    const perRead = KV_GET_MANY / 2;
    for (let i = 0; i < all.length; i += perRead) {
      const group = all.slice(i, i + perRead);
      const keys = group.flatMap((l) => [chunkLocationKey(l.hash), objectKey(l.hash)]);
      this.kv.getMany(keys).then(
        (entries) => group.forEach((l, j) => l.resolve([entries[2 * j], entries[2 * j + 1]])),
        (e) => group.forEach((l) => l.reject(e)),
      );
    }
  }

  /** Open (creating if needed) the store of the synced directory `root`. */
  static async open(root: string, opts: LocalStoreOptions = {}): Promise<LocalStore> {
    const absRoot = await Deno.realPath(root);
    const dataDir = `${absRoot}/${DATA_DIR_NAME}`;
    await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
    const kv = await Deno.openKv(`${dataDir}/index.kv`);
    try {
      const packs = await PackStore.open(kv, `${dataDir}/packs`, opts);
      return new LocalStore(
        absRoot,
        dataDir,
        kv,
        packs,
        new FileIndex(kv),
        new ChunkLocator(kv, absRoot),
        new Snapshots(kv),
      );
    } catch (e) {
      kv.close();
      throw e;
    }
  }

  /**
   * Reclaim pack space (see gc.ts for the rules). With `retainedRoots`, objects no retained
   * version needs are dropped too, once older than `graceMs`; the files the last scan saw
   * count as retained (a local edit is needed until it is uploaded), and so do pinned
   * objects. Without it, only chunks the tree holds are dropped. Safe to run while syncing;
   * one at a time.
   */
  collectGarbage(opts: GcOptions = {}): Promise<GcStats> {
    const { keep } = opts;
    return collectGarbage(this.packs, this.locator, {
      localRoots: () => this.#localFileRoots(),
      ...opts,
      keep: async (hash) => this.pins.has(hash) || (keep !== undefined && await keep(hash)),
    });
  }

  /** Content roots of the files the last scan (or materialization) recorded. */
  async *#localFileRoots(): AsyncGenerator<Hash> {
    for await (const [, rec] of this.files.list()) if (rec.kind === "file") yield rec.root;
  }

  /** Stop any garbage collection, flush pending objects and close the database. */
  async close(): Promise<void> {
    this.locator.close();
    try {
      await this.packs.close();
    } finally {
      this.kv.close();
    }
  }

  /** Bytes used by the data folder (database and packs). */
  diskUsage(): Promise<number> {
    return directoryBytes(this.dataDir);
  }
}

/** Bytes in the regular files below `dir`, all levels (symlinks not followed). */
export async function directoryBytes(dir: string): Promise<number> {
  let total = 0;
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) total += await directoryBytes(p);
    else if (e.isFile) total += (await Deno.stat(p)).size;
  }
  return total;
}
