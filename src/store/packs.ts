/**
 * The object store for what no current file of the tree holds: Merkle tree nodes, chunks of
 * incoming versions, retained history. Objects are appended to pack files (as git and restic
 * do, never one file per object) and indexed in Deno KV by hash.
 *
 * Pack record layout: `u32 big-endian payload length | 32-byte SHA-256 | payload`. Records are
 * self-describing so a lost index can be rebuilt by reading the packs sequentially.
 *
 * Durability rule: a pack is fsynced before any index entry that points into it is committed,
 * so an index entry never refers to bytes that a crash could lose. A crash between the two
 * leaves unreferenced bytes in the pack, which are harmless.
 *
 * Every read re-hashes the bytes: a corrupt pack is reported, never served.
 */
import { assertHash, type Hash, HASH_LENGTH, hashEquals, sha256, toHex } from "../chunk/hash.ts";
import { CorruptObjectError, MissingObjectError } from "./errors.ts";
import { KvBatch } from "./kv_batch.ts";
import { objectKey, type ObjectLocation, parseObjectLocation } from "./schema.ts";

const RECORD_HEADER = 4 + HASH_LENGTH;
/** A new pack is started once the current one reaches this size. */
const PACK_TARGET_BYTES = 64 * 1024 * 1024;
/** Pending objects are flushed once this many bytes wait in memory. */
const PENDING_FLUSH_BYTES = 16 * 1024 * 1024;
/** Largest object accepted: a maximum-size chunk with room to spare. */
export const MAX_OBJECT_BYTES = 16 * 1024 * 1024;

/** Pack file name for pack number n. */
function packName(n: number): string {
  return `pack-${String(n).padStart(6, "0")}.pack`;
}

/** Content-addressed, append-only, verified object store. */
export class PackStore {
  /** Objects accepted but not yet durable; readable already. */
  #pending = new Map<string, { hash: Hash; bytes: Uint8Array }>();
  #pendingBytes = 0;
  #flushing: Promise<void> = Promise.resolve();
  #readers = new Map<number, Deno.FsFile>();
  #readQueues = new Map<number, Promise<void>>();
  #packNo = 0;
  #packSize = 0;
  #backgroundError: unknown = undefined;

  private constructor(private readonly kv: Deno.Kv, private readonly dir: string) {}

  /** Open the store kept in `dir` (created if missing), indexed in `kv`. */
  static async open(kv: Deno.Kv, dir: string): Promise<PackStore> {
    await Deno.mkdir(dir, { recursive: true });
    const store = new PackStore(kv, dir);
    for await (const entry of Deno.readDir(dir)) {
      const m = /^pack-(\d{6})\.pack$/.exec(entry.name);
      if (m) store.#packNo = Math.max(store.#packNo, Number(m[1]));
    }
    if (store.#packNo === 0) store.#packNo = 1;
    try {
      store.#packSize = (await Deno.stat(store.#path(store.#packNo))).size;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return store;
  }

  #path(n: number): string {
    return `${this.dir}/${packName(n)}`;
  }

  /**
   * Accept an object. It is readable at once and durable after the next flush(). The caller
   * vouches that `hash` is SHA-256 of `bytes` (the builder computed it); it is checked anyway
   * when the object is read back.
   */
  put(hash: Hash, bytes: Uint8Array): void {
    assertHash(hash, "object hash");
    if (bytes.byteLength > MAX_OBJECT_BYTES) {
      throw new RangeError(`object ${toHex(hash)} is ${bytes.byteLength} bytes, over the limit`);
    }
    const key = toHex(hash);
    if (this.#pending.has(key)) return;
    this.#pending.set(key, { hash: hash.slice(), bytes: bytes.slice() });
    this.#pendingBytes += bytes.byteLength;
    if (this.#pendingBytes >= PENDING_FLUSH_BYTES) {
      // A background flush bounds memory; its error surfaces on the next explicit flush().
      this.flush().catch((e) => this.#backgroundError ??= e);
    }
  }

  /** Accept an object after checking its hash; for bytes from untrusted sources. */
  putVerified(hash: Hash, bytes: Uint8Array): void {
    if (!hashEquals(sha256(bytes), hash)) {
      throw new CorruptObjectError(hash, "received bytes do not match the hash");
    }
    this.put(hash, bytes);
  }

  /** Whether the object is held (pending or durable). */
  async has(hash: Hash): Promise<boolean> {
    if (this.#pending.has(toHex(hash))) return true;
    return (await this.kv.get(objectKey(hash))).value !== null;
  }

  /** The object's bytes, verified; throws MissingObjectError or CorruptObjectError. */
  async get(hash: Hash): Promise<Uint8Array> {
    const pending = this.#pending.get(toHex(hash));
    if (pending) return pending.bytes;
    const entry = await this.kv.get(objectKey(hash));
    if (entry.value === null) throw new MissingObjectError(hash);
    const loc = parseObjectLocation(entry.value);
    const bytes = await this.#readRecord(hash, loc);
    if (!hashEquals(sha256(bytes), hash)) {
      throw new CorruptObjectError(hash, `bytes in ${packName(loc.pack)} do not match`);
    }
    return bytes;
  }

  /** NodeSource for the Merkle layer. */
  getNode(hash: Hash): Promise<Uint8Array> {
    return this.get(hash);
  }

  /**
   * Reads of one pack share a file handle, and a read is a seek then a read: two at once
   * would interleave and read each other's bytes, so reads of a pack run one at a time.
   */
  #readRecord(hash: Hash, loc: ObjectLocation): Promise<Uint8Array> {
    const previous = this.#readQueues.get(loc.pack) ?? Promise.resolve();
    const run = previous.then(() => this.#readRecordNow(hash, loc));
    const settled = run.then(() => {}, () => {});
    this.#readQueues.set(loc.pack, settled);
    settled.then(() => {
      if (this.#readQueues.get(loc.pack) === settled) this.#readQueues.delete(loc.pack);
    });
    return run;
  }

  async #readRecordNow(hash: Hash, loc: ObjectLocation): Promise<Uint8Array> {
    let file = this.#readers.get(loc.pack);
    if (!file) {
      try {
        file = await Deno.open(this.#path(loc.pack), { read: true });
      } catch (e) {
        throw new CorruptObjectError(hash, `pack ${packName(loc.pack)} unreadable: ${e}`);
      }
      this.#readers.set(loc.pack, file);
    }
    const record = new Uint8Array(RECORD_HEADER + loc.length);
    await file.seek(loc.offset - RECORD_HEADER, Deno.SeekMode.Start);
    let read = 0;
    while (read < record.length) {
      const n = await file.read(record.subarray(read));
      if (n === null) throw new CorruptObjectError(hash, `pack ${packName(loc.pack)} truncated`);
      read += n;
    }
    const view = new DataView(record.buffer);
    if (view.getUint32(0) !== loc.length || !hashEquals(record.subarray(4, RECORD_HEADER), hash)) {
      throw new CorruptObjectError(hash, `record header in ${packName(loc.pack)} does not match`);
    }
    return record.subarray(RECORD_HEADER);
  }

  /** Make every accepted object durable: append, fsync the pack, then index it. */
  async flush(): Promise<void> {
    const run = this.#flushing.then(() => this.#flushPending());
    // The chain continues after a failure; each caller still sees its own flush's error.
    this.#flushing = run.catch(() => {});
    await run;
    if (this.#backgroundError !== undefined) {
      const e = this.#backgroundError;
      this.#backgroundError = undefined;
      throw e;
    }
  }

  async #flushPending(): Promise<void> {
    if (this.#pending.size === 0) return;
    // An object stored by an earlier flush may be appended again (say, two identical small
    // files): the index then points at the newer copy and the older bytes are dead weight.
    // Checking the index first would cost one KV read per object on every flush.
    const objects = [...this.#pending.values()];
    const fresh = objects;
    const locations: { hash: Hash; loc: ObjectLocation }[] = [];
    let i = 0;
    while (i < fresh.length) {
      if (this.#packSize >= PACK_TARGET_BYTES) {
        this.#packNo++;
        this.#packSize = 0;
      }
      const parts: Uint8Array[] = [];
      let size = 0;
      while (i < fresh.length && (size === 0 || this.#packSize + size < PACK_TARGET_BYTES)) {
        const { hash, bytes } = fresh[i++];
        const header = new Uint8Array(RECORD_HEADER);
        new DataView(header.buffer).setUint32(0, bytes.byteLength);
        header.set(hash, 4);
        locations.push({
          hash,
          loc: {
            pack: this.#packNo,
            offset: this.#packSize + size + RECORD_HEADER,
            length: bytes.byteLength,
          },
        });
        parts.push(header, bytes);
        size += RECORD_HEADER + bytes.byteLength;
      }
      const file = await Deno.open(this.#path(this.#packNo), {
        create: true,
        append: true,
        mode: 0o600,
      });
      try {
        for (const part of parts) {
          let written = 0;
          while (written < part.length) written += await file.write(part.subarray(written));
        }
        await file.sync();
      } finally {
        file.close();
      }
      this.#packSize += size;
    }
    const batch = new KvBatch(this.kv);
    for (const { hash, loc } of locations) {
      await batch.set(objectKey(hash), loc);
    }
    await batch.flush();
    for (const o of objects) {
      this.#pending.delete(toHex(o.hash));
      this.#pendingBytes -= o.bytes.byteLength;
    }
  }

  /** Flush and release file handles. */
  async close(): Promise<void> {
    await this.flush();
    for (const f of this.#readers.values()) f.close();
    this.#readers.clear();
  }

  /** Total bytes in pack files (for disk-use reports). */
  async diskUsage(): Promise<number> {
    let total = 0;
    for await (const entry of Deno.readDir(this.dir)) {
      if (entry.isFile) total += (await Deno.stat(`${this.dir}/${entry.name}`)).size;
    }
    return total;
  }
}
