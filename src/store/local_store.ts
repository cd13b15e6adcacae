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
