/**
 * Keeping replaced versions on this node. With history, a version the materializer replaces
 * or deletes is still retained by the index (`restore --at`, `pull --at`), but its file was
 * the only local copy of its chunks: before the file goes, the chunks the new content does not
 * contain are copied into the packs, where the garbage collector keeps them for as long as a
 * retained version needs them (store/liveness.ts).
 *
 * Cost: an edit packs only the chunks it changed (old minus new, by hash: a 4 KiB overwrite
 * of a 256 MiB file packs about one chunk). A whole-file delete, or a file replaced by a
 * directory or symlink, packs the whole file: that is the price of keeping its history here.
 */
import { type Hash, hashEquals, hashKey, sha256, toHex } from "../chunk/mod.ts";
import { type FileChunk, type NodeSource, walkFileChunks } from "../merkle/mod.ts";
import type { LocalStore } from "../store/mod.ts";
import type { LogFields } from "./log.ts";
import { readBytesAt } from "../util/mod.ts";

/** Where preservation reports what it could not do (a daemon's Logger fits). */
export interface PreserveLog {
  debug(event: string, fields?: LogFields): void;
}

/** What preserving one replaced version did. */
export interface Preserved {
  /** Chunks copied into the packs, and their bytes. */
  packed: number;
  bytes: number;
  /** Chunks the packs held already, or another current file holds (a rename's new path). */
  alreadyHeld: number;
  /** Chunks the old file no longer held (edited behind our back): not preserved. */
  unverified: number;
  /**
   * Unpin the chunks once the old file is gone (or the replacement was given up): until then
   * the garbage collector's tree rule would see them in the old file and drop the pack copies.
   */
  release(): void;
}

/**
 * Copy the chunks of `oldRoot` (the version now in the file `abs`, at `path`) that `newRoot`
 * does not contain (null: the path will hold no file) into the packs and make them durable.
 * Call before the old file is renamed over or removed; call `release()` after. Never throws
 * for an unreadable old tree or file: what cannot be read is logged and skipped (the version
 * stays on the other nodes that hold it).
 */
export async function preserveReplaced(
  store: LocalStore,
  path: string,
  abs: string,
  oldRoot: Hash,
  newRoot: Hash | null,
  log?: PreserveLog,
): Promise<Preserved> {
  const keep = newRoot === null ? new Set<string>() : await chunkKeys(newRoot, store.packs);
  const lost = await chunksNotIn(
    oldRoot,
    keep,
    store.packs,
    (e) =>
      log?.debug("old version's tree not readable; its chunks are not preserved", {
        path,
        root: toHex(oldRoot),
        error: (e as Error).message,
      }),
  );
  const result: Preserved = {
    packed: 0,
    bytes: 0,
    alreadyHeld: 0,
    unverified: 0,
    release: store.pins.pin(lost.map((c) => c.hash)),
  };
  try {
    await packFromFile(store, path, abs, lost, result);
    // Durable before the caller's rename or removal: a crash then cannot lose them. Only
    // these: a flush of everything would wait for whatever else is pending (a push).
    await store.packs.flushOnly(lost.map((c) => c.hash));
  } catch (e) {
    result.release();
    throw e;
  }
  if (result.unverified > 0) {
    log?.debug("old version partly changed on disk; those chunks are not preserved", {
      path,
      chunks: result.unverified,
    });
  }
  return result;
}

/** hashKeys of the chunks of a version; empty if its tree cannot be read (pack it all). */
async function chunkKeys(root: Hash, nodes: NodeSource): Promise<Set<string>> {
  const out = new Set<string>();
  try {
    for await (const c of walkFileChunks(root, nodes)) out.add(hashKey(c.hash));
  } catch {
    out.clear();
  }
  return out;
}

/**
 * The chunks of `root` whose hash is not in `keep`, each once (its first occurrence). A tree
 * that cannot be read whole yields what was read before the failure, which is reported.
 */
async function chunksNotIn(
  root: Hash,
  keep: Set<string>,
  nodes: NodeSource,
  onError: (e: unknown) => void,
): Promise<FileChunk[]> {
  const out: FileChunk[] = [];
  const seen = new Set<string>();
  try {
    for await (const c of walkFileChunks(root, nodes)) {
      const key = hashKey(c.hash);
      if (keep.has(key) || seen.has(key)) continue;
      seen.add(key);
      out.push(c);
    }
  } catch (e) {
    onError(e);
  }
  return out;
}

/**
 * Put each chunk the packs lack, read from `abs` at its offset and verified, into the packs.
 * A chunk another current file holds (verified there) is left to that file: a rename writes
 * its new path before the old one goes, and must not cost a copy of the whole file; if that
 * file is replaced in turn, its own replacement preserves the chunk.
 */
async function packFromFile(
  store: LocalStore,
  path: string,
  abs: string,
  chunks: FileChunk[],
  result: Preserved,
): Promise<void> {
  if (chunks.length === 0) return;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(abs, { read: true });
  } catch {
    result.unverified += chunks.length;
    return;
  }
  try {
    for (const c of chunks) {
      if (await store.packs.has(c.hash) || await heldElsewhere(store, c.hash, path)) {
        result.alreadyHeld++;
        continue;
      }
      const bytes = await readBytesAt(file, c.offset, c.length);
      if (bytes === null || !hashEquals(sha256(bytes), c.hash)) {
        result.unverified++;
        continue;
      }
      store.packs.put(c.hash, bytes);
      result.packed++;
      result.bytes += bytes.length;
    }
  } finally {
    file.close();
  }
}

/** Whether the chunk locator places the chunk in another file, where it still verifies. */
async function heldElsewhere(store: LocalStore, hash: Hash, path: string): Promise<boolean> {
  const loc = await store.locator.lookup(hash);
  if (loc === null || loc.path === path) return false;
  try {
    return (await store.locator.read(hash, { fresh: true })) !== null;
  } catch {
    return false; // stale or unreadable there: keep our own copy
  }
}
