/**
 * The chunk locator: the synced tree is the main chunk store, so instead of copying chunk
 * bytes into the object store FileSync records where each chunk already lies (a file of the
 * tree, offset, length). Files change behind our back, so every read through the locator
 * re-hashes the bytes; a location that no longer holds the chunk is an error naming the hash,
 * never wrong bytes.
 */
import { type Hash, hashEquals, sha256 } from "../chunk/hash.ts";
import { StaleLocationError } from "./errors.ts";
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
   * throws StaleLocationError if the recorded place no longer holds the chunk.
   */
  async read(hash: Hash): Promise<Uint8Array | null> {
    const loc = await this.lookup(hash);
    if (!loc) return null;
    let file: Deno.FsFile;
    try {
      file = await Deno.open(`${this.root}/${loc.path}`, { read: true });
    } catch (e) {
      throw new StaleLocationError(hash, loc.path, `cannot open: ${(e as Error).message}`);
    }
    try {
      const bytes = new Uint8Array(loc.length);
      await file.seek(loc.offset, Deno.SeekMode.Start);
      let read = 0;
      while (read < bytes.length) {
        const n = await file.read(bytes.subarray(read));
        if (n === null) throw new StaleLocationError(hash, loc.path, "file is shorter now");
        read += n;
      }
      if (!hashEquals(sha256(bytes), hash)) {
        throw new StaleLocationError(hash, loc.path, "bytes there have changed");
      }
      return bytes;
    } finally {
      file.close();
    }
  }
}
