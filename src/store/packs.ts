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
 * leaves unreferenced bytes in the pack, which are harmless (compaction reclaims them).
 *
 * Packs are append-only: once a pack reaches the target size a new one is started and the old
 * one is sealed. Space is reclaimed only by compact(), which copies a sealed pack's live
 * objects forward and deletes the whole pack.
 *
 * Every read re-hashes the bytes: a corrupt pack is reported, never served.
 */
import { KV_GET_MANY, mapLimit, openPositional, type PositionalFile } from "../util/mod.ts";
import { assertHash, type Hash, hashEquals, sha256, toHex } from "../chunk/hash.ts";
import { CorruptObjectError, MissingObjectError } from "./errors.ts";
import { KvBatch } from "./kv_batch.ts";
import {
  MAX_OBJECT_BYTES,
  type PackedObject,
  packName,
  packNumber,
  readRecord,
  RECORD_HEADER,
  walkPack,
} from "./pack_file.ts";
import { objectKey, type ObjectLocation, parseObjectLocation } from "./schema.ts";

export { MAX_OBJECT_BYTES } from "./pack_file.ts";

/** Default size at which a pack is sealed and a new one started. */
export const DEFAULT_PACK_TARGET_BYTES = 64 * 1024 * 1024;
/** Pending objects are flushed once this many bytes wait in memory. */
const PENDING_FLUSH_BYTES = 16 * 1024 * 1024;
/** Compaction flushes its copies this often, bounding the memory they take. */
const COPY_FLUSH_BYTES = 8 * 1024 * 1024;
/** isDead calls in flight at once during compaction (they read files of the tree). */
const DEAD_CHECK_CONCURRENCY = 8;
/**
 * A read whose pack compaction deleted under it looks the object up again; more than a couple
 * of retries would mean compactions back to back, which compact() does not do.
 */
const READ_RETRIES = 3;

/** Options of PackStore.open. */
export interface PackStoreOptions {
  /** Size at which a pack is sealed and a new one started (default 64 MiB). */
  packTargetBytes?: number;
}

/** Steps of compacting one pack, after each of which a crash is safe (see compact()). */
export type CompactStep = "copied" | "unindexed" | "deleted";

/** Options of PackStore.compact. */
export interface CompactOptions {
  /**
   * Rewrite a pack only if at least this fraction of its bytes is dead (default 0.5): lower
   * reclaims more, at the cost of copying more live bytes.
   */
  minDeadFraction?: number;
  /** Stops the compaction at the next safe point (between steps); it then rejects. */
  signal?: AbortSignal;
  /**
   * Called after each step of each rewritten pack. For tests: throwing here leaves the store
   * exactly as a crash at that point would.
   */
  onStep?: (step: CompactStep, pack: number) => void | Promise<void>;
}

/**
 * Where an object asked about by compact()'s isDead predicate lies: what a time-based rule
 * needs (an object younger than a grace period must stay, whatever refers to it).
 */
export interface PackedContext {
  pack: number;
  /**
   * The pack was the one being appended to when the compaction started: objects keep arriving
   * in it, so no age can be given for them.
   */
  current: boolean;
  /**
   * When the pack was last written to (its mtime as the survey saw it), ms since the epoch:
   * every object in a sealed pack was written at or before this time.
   */
  lastWrite: number;
}

/**
 * The liveness predicate of compact(): false keeps the object; true, or a non-empty string
 * naming the rule that found it dead (counted in CompactStats.droppedBy), drops it.
 */
export type DeadPredicate = (hash: Hash, where: PackedContext) => Promise<boolean | string>;

/** What a compaction did. */
export interface CompactStats {
  /** Packs whose live objects were copied forward and which were then deleted. */
  packsRewritten: number;
  /** Objects removed from the index because isDead said they are no longer needed. */
  objectsDropped: number;
  /** objectsDropped split by the rule isDead named ("dead" when it answered plain true). */
  droppedBy: Record<string, number>;
  /** Bytes of pack files deleted, minus the bytes their live objects take in the new pack. */
  bytesReclaimed: number;
  /** Objects found corrupt while copying: removed from the index, not copied. */
  corrupt: CorruptObjectError[];
}

/** The indexed objects of one pack (or a byte range of it), split by the isDead predicate. */
interface Survey {
  pack: number;
  /** Bytes of the pack (range) surveyed. */
  bytes: number;
  live: PackedObject[];
  dead: PackedObject[];
  /** The rule that found each object of `dead` dead, in the same order. */
  reasons: string[];
}

/** Bytes a set of objects takes in a pack, headers included. */
function recordBytes(objects: readonly PackedObject[]): number {
  return objects.reduce((n, o) => n + RECORD_HEADER + o.loc.length, 0);
}

/** Whether the index entry `loc` is the record `o` (same pack and offset). */
function sameRecord(loc: ObjectLocation | null, o: PackedObject): boolean {
  return loc !== null && loc.pack === o.loc.pack && loc.offset === o.loc.offset;
}

/**
 * Make directory entries created in `dir` durable (a new pack file's name, not only its
 * bytes). Windows cannot open a directory; NTFS journals names itself.
 */
async function syncDir(dir: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

/** Content-addressed, append-only, verified object store. */
export class PackStore {
  /** Objects accepted but not yet durable; readable already. */
  #pending = new Map<string, { hash: Hash; bytes: Uint8Array }>();
  #pendingBytes = 0;
  /** Flushes, and compaction's index updates, run one at a time in this chain. */
  #flushing: Promise<void> = Promise.resolve();
  /** A flush queued in the chain and not started yet: it takes everything then pending. */
  #queued: Promise<void> | null = null;
  /** The flush running now, and the keys of the objects it took. */
  #current: Promise<void> = Promise.resolve();
  #taking = new Set<string>();
  /** The flushOnly run queued and not started yet, and the keys it will write. */
  #queuedKeys: { keys: Set<string>; run: Promise<void> } | null = null;
  /** One read handle per pack (positional reads: any number run at once on it). */
  #readers = new Map<number, Promise<PositionalFile>>();
  #packNo = 0;
  #packSize = 0;
  #backgroundError: unknown = undefined;
  /** Packs compaction deleted in this process: a failed read of one is retried. */
  #retired = new Set<number>();
  /** Compactions run one at a time. */
  #compacting: Promise<unknown> = Promise.resolve();
  /** Aborted by close(), so a running compaction stops at its next safe point. */
  #closing = new AbortController();

  private constructor(
    private readonly kv: Deno.Kv,
    private readonly dir: string,
    private readonly targetBytes: number,
  ) {}

  /** Open the store kept in `dir` (created if missing), indexed in `kv`. */
  static async open(kv: Deno.Kv, dir: string, opts: PackStoreOptions = {}): Promise<PackStore> {
    const target = opts.packTargetBytes ?? DEFAULT_PACK_TARGET_BYTES;
    if (!Number.isSafeInteger(target) || target < 1) {
      throw new RangeError("packTargetBytes must be a positive integer");
    }
    await Deno.mkdir(dir, { recursive: true });
    const store = new PackStore(kv, dir, target);
    for (const n of await store.#packNumbers()) store.#packNo = Math.max(store.#packNo, n);
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

  /** Numbers of the pack files on disk, ascending. */
  async #packNumbers(): Promise<number[]> {
    const out: number[] = [];
    for await (const entry of Deno.readDir(this.dir)) {
      const n = entry.isFile ? packNumber(entry.name) : null;
      if (n !== null) out.push(n);
    }
    return out.sort((a, b) => a - b);
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
      this.#flushSoon().catch((e) => this.#backgroundError ??= e);
    }
  }

  /** Accept an object after checking its hash; for bytes from untrusted sources. */
  putVerified(hash: Hash, bytes: Uint8Array): void {
    if (!hashEquals(sha256(bytes), hash)) {
      throw new CorruptObjectError(hash, "received bytes do not match the hash");
    }
    this.put(hash, bytes);
  }

  /** Whether the object is accepted but not flushed yet (readable, no index entry). */
  hasPending(hash: Hash): boolean {
    return this.#pending.has(toHex(hash));
  }

  /** Whether the object is held (pending or durable). */
  async has(hash: Hash): Promise<boolean> {
    if (this.#pending.has(toHex(hash))) return true;
    return (await this.kv.get(objectKey(hash))).value !== null;
  }

  /** The object's bytes, verified; throws MissingObjectError or CorruptObjectError. */
  get(hash: Hash): Promise<Uint8Array> {
    return this.getIndexed(hash, undefined);
  }

  /**
   * get() with the object's index entry already read (`entry`: its value, null if absent;
   * undefined: read it here). LocalStore.readObject reads it with the chunk locator's in one
   * KV operation.
   */
  async getIndexed(hash: Hash, entryValue: unknown): Promise<Uint8Array> {
    for (let attempt = 0;; attempt++) {
      const pending = this.#pending.get(toHex(hash));
      if (pending) return pending.bytes;
      const value = attempt === 0 && entryValue !== undefined
        ? entryValue
        : (await this.kv.get(objectKey(hash))).value;
      if (value === null) throw new MissingObjectError(hash);
      const loc = parseObjectLocation(value);
      let bytes: Uint8Array;
      try {
        bytes = await this.#readPacked(hash, loc);
      } catch (e) {
        // Compaction re-points the index before it deletes a pack, so a read that lost the
        // race finds the object's new place (or that it was dropped) by looking again.
        if (this.#retired.has(loc.pack) && attempt < READ_RETRIES) continue;
        throw e;
      }
      if (!hashEquals(sha256(bytes), hash)) {
        throw new CorruptObjectError(hash, `bytes in ${packName(loc.pack)} do not match`);
      }
      return bytes;
    }
  }

  /** NodeSource for the Merkle layer. */
  getNode(hash: Hash): Promise<Uint8Array> {
    return this.get(hash);
  }

  async #readPacked(hash: Hash, loc: ObjectLocation): Promise<Uint8Array> {
    let opening = this.#readers.get(loc.pack);
    if (!opening) {
      opening = openPositional(this.#path(loc.pack));
      this.#readers.set(loc.pack, opening);
      // A failed open is not kept: the next read tries again (after a retry of the index).
      opening.catch(() => {
        if (this.#readers.get(loc.pack) === opening) this.#readers.delete(loc.pack);
      });
    }
    let file: PositionalFile;
    try {
      file = await opening;
    } catch (e) {
      throw new CorruptObjectError(hash, `pack ${packName(loc.pack)} unreadable: ${e}`);
    }
    return await readRecord(file, hash, loc);
  }

  /**
   * Close the handle of a deleted pack once the reads running on it are done: they still read
   * the unlinked file; reads started later fail, and getIndexed retries them through the index.
   */
  async #dropReader(pack: number): Promise<void> {
    const opening = this.#readers.get(pack);
    this.#readers.delete(pack);
    (await opening?.catch(() => null))?.close();
  }

  /** Make every accepted object durable: append, fsync the pack, then index it. */
  /**
   * Make every accepted object durable; with `hashes`, only those (if accepted). Waiting for
   * a few objects does not wait for everything accepted meanwhile: a member taking a large
   * push and many small ones at once confirmed the small ones only when the large one was
   * flushed too, since each flush queued behind the others, and every push ended together.
   */
  async flush(hashes?: readonly Hash[]): Promise<void> {
    if (hashes !== undefined) {
      const keys = hashes.map(toHex);
      // At most twice: the next flush takes every object pending when it starts. A failed
      // flush rejects here and leaves its objects pending; an earlier background failure is
      // not these objects' concern (what it left pending is retried by the next flush).
      while (keys.some((key) => this.#pending.has(key))) {
        const left = keys.filter((key) => this.#pending.has(key));
        await (left.every((key) => this.#taking.has(key)) ? this.#current : this.#flushSoon());
      }
      return;
    }
    await this.#flushSoon();
    if (this.#backgroundError !== undefined) {
      const e = this.#backgroundError;
      this.#backgroundError = undefined;
      throw e;
    }
  }

  /**
   * Make just these objects durable, leaving everything else pending: they are appended on
   * their own once the running flush (if any) ends. For the few tree nodes a scan or a
   * materialized file puts here, whose records must not wait for a large push in flight to be
   * written too (flush(hashes) takes everything pending, which suits pushes: one fsync for
   * many of them).
   */
  async flushOnly(hashes: readonly Hash[]): Promise<void> {
    const keys = hashes.map(toHex);
    for (;;) {
      const left = keys.filter((key) => this.#pending.has(key));
      if (left.length === 0) return;
      const free = left.filter((key) => !this.#taking.has(key));
      if (free.length === 0) await this.#current;
      else await this.#flushKeysSoon(free);
    }
  }

  /**
   * A flush of these keys, joined with the other flushOnly calls made before it starts: a
   * batch of 256 small files recorded together asks for its 256 tree nodes at once, and they
   * go in one append and one fsync.
   */
  #flushKeysSoon(keys: readonly string[]): Promise<void> {
    const queued = this.#queuedKeys;
    if (queued !== null) {
      for (const key of keys) queued.keys.add(key);
      return queued.run;
    }
    const next = { keys: new Set(keys), run: Promise.resolve() };
    next.run = this.#exclusive(() => {
      if (this.#queuedKeys === next) this.#queuedKeys = null;
      return this.#flushKeys([...next.keys]);
    });
    this.#queuedKeys = next;
    return next.run;
  }

  /** Write the objects of `keys` still pending and not being written (run exclusively). */
  #flushKeys(keys: readonly string[]): Promise<void> {
    const objects = keys.filter((key) => !this.#taking.has(key))
      .map((key) => this.#pending.get(key))
      .filter((o) => o !== undefined);
    if (objects.length === 0) return Promise.resolve();
    this.#taking = new Set(objects.map((o) => toHex(o.hash)));
    this.#current = this.#write(objects).finally(() => this.#taking = new Set());
    return this.#current;
  }

  /** A flush of everything pending, queued behind the running one (or the one queued). */
  #flushSoon(): Promise<void> {
    if (this.#queued !== null) return this.#queued;
    const run = this.#exclusive(() => {
      this.#queued = null;
      this.#current = this.#flushPending();
      return this.#current;
    });
    this.#queued = run;
    return run;
  }

  /** Run `fn` with no flush (or other exclusive step) running; the chain survives failures. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#flushing.then(fn);
    this.#flushing = run.then(() => {}, () => {});
    return run;
  }

  async #flushPending(): Promise<void> {
    if (this.#pending.size === 0) return;
    // An object stored by an earlier flush may be appended again (say, two identical small
    // files): the index then points at the newer copy and the older bytes are dead weight
    // until compaction. Checking the index first would cost one KV read per object per flush.
    const objects = [...this.#pending.values()];
    this.#taking = new Set(this.#pending.keys());
    try {
      await this.#write(objects);
    } finally {
      this.#taking = new Set();
    }
  }

  /** Append `objects` to the packs, fsync, index them, and drop them from the pending set. */
  async #write(objects: { hash: Hash; bytes: Uint8Array }[]): Promise<void> {
    const locations: PackedObject[] = [];
    let i = 0;
    while (i < objects.length) {
      if (this.#packSize >= this.targetBytes) this.#startNewPack();
      const parts: Uint8Array[] = [];
      let size = 0;
      while (i < objects.length && (size === 0 || this.#packSize + size < this.targetBytes)) {
        const { hash, bytes } = objects[i++];
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
      await this.#append(parts);
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

  /** Seal the current pack: later appends go to a new one. */
  #startNewPack(): void {
    this.#packNo++;
    this.#packSize = 0;
  }

  /** Append `parts` to the current pack and make them (and a new pack's name) durable. */
  async #append(parts: Uint8Array[]): Promise<void> {
    const creating = this.#packSize === 0;
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
    } catch (e) {
      // The pack may now end in a partial record, and offsets are computed from #packSize:
      // continue in a fresh pack so they stay true. The torn one is sealed as it is.
      this.#startNewPack();
      throw e;
    } finally {
      file.close();
    }
    if (creating) await syncDir(this.dir);
  }

  /** Current index entries of `hashes`, null where there is none. */
  async #lookupMany(hashes: readonly Hash[]): Promise<(ObjectLocation | null)[]> {
    const out: (ObjectLocation | null)[] = [];
    for (let i = 0; i < hashes.length; i += KV_GET_MANY) {
      const keys = hashes.slice(i, i + KV_GET_MANY).map(objectKey);
      for (const e of await this.kv.getMany(keys)) {
        out.push(e.value === null ? null : parseObjectLocation(e.value));
      }
    }
    return out;
  }

  /**
   * Reclaim the space of objects that are no longer needed.
   *
   * For each sealed pack, the objects the index places in it are split by `isDead`; a pack
   * whose dead bytes (dead objects, plus bytes the index does not point at: superseded copies,
   * torn appends) reach `minDeadFraction` of its size is rewritten: its live objects are read,
   * verified and appended to the current pack, and the old pack is deleted. A corrupt object
   * is dropped from the index instead of copied, and reported. The current pack is sealed and
   * rewritten the same way when it qualifies, so space held by recent objects (chunks pushed
   * before a commit) is reclaimed without waiting for the pack to fill.
   *
   * Crash safety: the steps for one pack are ordered so that at every instant each live
   * object's index entry points at durable bytes that hold it.
   *  1. Copy: live objects are appended to the current pack, which is fsynced (and its
   *     directory, if the file is new) before the KV commit that re-points their entries
   *     (the normal flush path). A crash before that commit leaves entries pointing into the
   *     old pack, which still exists; the copies are unreferenced bytes that a later
   *     compaction counts as dead.
   *  2. Unindex: the entries of dead and corrupt objects are deleted, but only where they still
   *     point into the old pack (a concurrent put may have stored a fresh copy). A crash here
   *     leaves some of them pointing into the old pack, which still exists.
   *  3. Delete the old pack file, only after the commits of 1 and 2 returned (Deno KV commits
   *     are durable when they return). A crash before the delete leaves a pack the index no
   *     longer points into: the next compaction finds it 100% dead and deletes it. If the
   *     delete itself is lost in a power failure, the same happens.
   * Before step 3 it checks that no live object is still indexed in the old pack, and stops
   * with an error (keeping the pack) if one is.
   *
   * Concurrent reads: a get() that looked up the old location before step 1 committed reads
   * the old pack; the shared handle is closed only after reads queued before the delete, and
   * a read that finds the pack gone looks the object up again and follows it.
   *
   * Limitation: a record whose header hash is damaged cannot be matched with its index entry;
   * that entry is left dangling, and reads of it fail as corrupt, as they did before.
   */
  compact(
    isDead: DeadPredicate,
    opts: CompactOptions = {},
  ): Promise<CompactStats> {
    const fraction = opts.minDeadFraction ?? 0.5;
    if (!(fraction >= 0 && fraction <= 1)) {
      return Promise.reject(new RangeError("minDeadFraction must be between 0 and 1"));
    }
    const signal = opts.signal
      ? AbortSignal.any([opts.signal, this.#closing.signal])
      : this.#closing.signal;
    const run = this.#compacting.then(() =>
      this.#compactAll(isDead, { ...opts, minDeadFraction: fraction, signal })
    );
    this.#compacting = run.catch(() => {});
    return run;
  }

  async #compactAll(
    isDead: DeadPredicate,
    opts: CompactOptions & { minDeadFraction: number; signal: AbortSignal },
  ): Promise<CompactStats> {
    const stats: CompactStats = {
      packsRewritten: 0,
      objectsDropped: 0,
      droppedBy: {},
      bytesReclaimed: 0,
      corrupt: [],
    };
    const qualifies = (s: Survey) => {
      const dead = s.bytes - recordBytes(s.live);
      return s.bytes === 0 || (dead > 0 && dead >= opts.minDeadFraction * s.bytes);
    };
    // Packs are sealed once a later one exists; flushes during the run only add later ones.
    const current = this.#packNo;
    for (const pack of (await this.#packNumbers()).filter((n) => n < current)) {
      opts.signal.throwIfAborted();
      const info = await Deno.stat(this.#path(pack));
      const where = { pack, current: false, lastWrite: info.mtime?.getTime() ?? Date.now() };
      const survey = await this.#survey(where, 0, info.size, isDead, opts.signal);
      if (qualifies(survey)) await this.#rewrite(survey, stats, opts);
    }
    // The current pack: survey what is durable now, seal it if it qualifies, then survey what
    // was appended meanwhile (nothing is appended to it after the seal).
    if (this.#packNo === current && this.#packSize > 0) {
      opts.signal.throwIfAborted();
      const size = this.#packSize;
      const where = { pack: current, current: true, lastWrite: Date.now() };
      const survey = await this.#survey(where, 0, size, isDead, opts.signal);
      if (qualifies(survey)) {
        await this.#exclusive(() => {
          if (this.#packNo === current) this.#startNewPack();
          return Promise.resolve();
        });
        const sealed = (await Deno.stat(this.#path(current))).size;
        if (sealed > size) {
          const tail = await this.#survey(where, size, sealed, isDead, opts.signal);
          survey.live.push(...tail.live);
          survey.dead.push(...tail.dead);
          survey.reasons.push(...tail.reasons);
          survey.bytes += tail.bytes;
        }
        await this.#rewrite(survey, stats, opts);
      }
    }
    return stats;
  }

  /**
   * Find the objects the index places in bytes [from, to) of `pack` and ask `isDead` about
   * each. The records are found by walking the pack; if its record chain is broken (a torn
   * append, a damaged length), every index entry is scanned instead, which is slow but
   * finds all of them.
   */
  async #survey(
    where: PackedContext,
    from: number,
    to: number,
    isDead: DeadPredicate,
    signal: AbortSignal,
  ): Promise<Survey> {
    const { pack } = where;
    const file = await Deno.open(this.#path(pack), { read: true });
    let walk;
    try {
      walk = await walkPack(file, pack, from, to);
    } finally {
      file.close();
    }
    let indexed: PackedObject[];
    if (walk.clean) {
      const entries = await this.#lookupMany(walk.records.map((r) => r.hash));
      indexed = walk.records.flatMap((r, i) => {
        const loc = entries[i];
        return loc !== null && sameRecord(loc, r) ? [{ hash: r.hash, loc }] : [];
      });
    } else {
      indexed = await this.#indexedIn(pack, from, to);
    }
    const verdicts = await mapLimit(indexed, DEAD_CHECK_CONCURRENCY, (o) => {
      signal.throwIfAborted();
      return isDead(o.hash, where);
    });
    const dead = verdicts.map((v) => v === true || (typeof v === "string" && v !== ""));
    return {
      pack,
      bytes: to - from,
      live: indexed.filter((_, i) => !dead[i]),
      dead: indexed.filter((_, i) => dead[i]),
      reasons: verdicts.filter((_, i) => dead[i]).map((v) => typeof v === "string" ? v : "dead"),
    };
  }

  /** Every index entry pointing into bytes [from, to) of `pack`: a full scan of the index. */
  async #indexedIn(pack: number, from: number, to: number): Promise<PackedObject[]> {
    const out: PackedObject[] = [];
    for await (const e of this.kv.list({ prefix: ["obj"] })) {
      const loc = parseObjectLocation(e.value);
      if (loc.pack === pack && loc.offset >= from && loc.offset < to) {
        out.push({ hash: e.key[1] as Hash, loc });
      }
    }
    return out;
  }

  /** Steps 1-3 of compact() for one surveyed pack. */
  async #rewrite(
    survey: Survey,
    stats: CompactStats,
    opts: CompactOptions & { signal: AbortSignal },
  ): Promise<void> {
    const { pack } = survey;
    const path = this.#path(pack);
    const sizeBefore = (await Deno.stat(path)).size;
    // 1. Copy the live objects forward through the flush path (fsync, then index).
    const copied: PackedObject[] = [];
    const corrupt: PackedObject[] = [];
    const file = await openPositional(path);
    try {
      let unflushed = 0;
      for (const o of survey.live) {
        opts.signal.throwIfAborted();
        try {
          const bytes = await readRecord(file, o.hash, o.loc);
          if (!hashEquals(sha256(bytes), o.hash)) {
            throw new CorruptObjectError(o.hash, `bytes in ${packName(pack)} do not match`);
          }
          this.put(o.hash, bytes);
          copied.push(o);
          unflushed += bytes.byteLength;
        } catch (e) {
          if (!(e instanceof CorruptObjectError)) throw e;
          stats.corrupt.push(e);
          corrupt.push(o);
        }
        if (unflushed >= COPY_FLUSH_BYTES) {
          await this.flush();
          unflushed = 0;
        }
      }
      await this.flush();
    } finally {
      file.close();
    }
    await opts.onStep?.("copied", pack);
    // 2. Drop the dead and corrupt objects' entries, checking first that no live one is left.
    opts.signal.throwIfAborted();
    const dropped = await this.#exclusive(() => this.#unindex(pack, survey.dead, corrupt, copied));
    for (const i of dropped) {
      const reason = survey.reasons[i];
      stats.droppedBy[reason] = (stats.droppedBy[reason] ?? 0) + 1;
    }
    stats.objectsDropped += dropped.length;
    await opts.onStep?.("unindexed", pack);
    // 3. Delete the pack. Reads that lose the race retry (see get()).
    this.#retired.add(pack);
    try {
      await Deno.remove(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    await this.#dropReader(pack);
    stats.packsRewritten++;
    stats.bytesReclaimed += sizeBefore - recordBytes(copied);
    await opts.onStep?.("deleted", pack);
  }

  /**
   * Delete the entries of `dead` and `corrupt` objects that still point at their record in
   * `pack`; run exclusively with flushes, so no flush can store a fresh copy between the check
   * and the delete. Throws, deleting nothing, if an object of `keep` is still indexed in
   * `pack`. Returns the positions in `dead` of the entries deleted.
   */
  async #unindex(
    pack: number,
    dead: readonly PackedObject[],
    corrupt: readonly PackedObject[],
    keep: readonly PackedObject[],
  ): Promise<number[]> {
    const kept = await this.#lookupMany(keep.map((o) => o.hash));
    const stuck = keep.findIndex((o, i) => sameRecord(kept[i], o));
    if (stuck >= 0) {
      throw new Error(
        `compaction of ${packName(pack)}: object ${toHex(keep[stuck].hash)} is still indexed ` +
          "there after its copy; the pack is kept",
      );
    }
    const drop = [...dead, ...corrupt];
    const current = await this.#lookupMany(drop.map((o) => o.hash));
    const batch = new KvBatch(this.kv);
    const deadDeleted: number[] = [];
    for (const [i, o] of drop.entries()) {
      if (!sameRecord(current[i], o)) continue;
      await batch.delete(objectKey(o.hash));
      if (i < dead.length) deadDeleted.push(i);
    }
    await batch.flush();
    return deadDeleted;
  }

  /** Stop any compaction, flush and release file handles. */
  async close(): Promise<void> {
    this.#closing.abort(new DOMException("the pack store is closing", "AbortError"));
    await this.#compacting;
    await this.flush();
    const readers = [...this.#readers.values()];
    this.#readers.clear();
    for (const f of await Promise.all(readers.map((r) => r.catch(() => null)))) f?.close();
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
