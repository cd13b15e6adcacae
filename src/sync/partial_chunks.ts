/**
 * Chunks this node has already written into the temp file of a file it is still assembling,
 * so that it can serve them to other members before the file is complete.
 *
 * Why: in a cluster of three or more, the members that join or fall behind fetch the same new
 * files at the same time. Without this, a large file becomes servable by a member only once it
 * is renamed into place and recorded, so every member fetched all of it from the node that
 * wrote it, whose uplink then carried the file once per member. With it, members fetch each
 * other's finished parts while the file is still arriving (each fetches its own stripe of the
 * file first, see stripeOf, so their parts differ).
 *
 * Chunks of a batch of small files fetched ahead (see prefetch.ts) are held in memory until
 * the batch is written, and served from there: the members catching up fetch those batches at
 * the same time too, each its stripe of the chunks.
 *
 * A chunk this node is fetching right now, as part of its own stripe, is "expected": a member
 * asking for it waits a little (waitFor) rather than hearing that it is missing and asking the
 * origin for it.
 *
 * Nothing read from a temp file is trusted: a read hashes the bytes and answers null if they
 * do not match (the temp file could have been removed, or its bytes changed, in between).
 * Entries live only while their materialization runs; the registry is memory only, never
 * persisted.
 */
import { type Hash, hashEquals, hashKey, sha256 } from "../chunk/mod.ts";
import { openPositional, type PositionalFile } from "../util/mod.ts";

/** Where one chunk lies: written in a temp file, or held in memory (`bytes`). */
interface Place {
  /** The temp file, or the name of the batch holding `bytes` (see keep). */
  tmpAbs: string;
  offset: number;
  length: number;
  bytes?: Uint8Array;
}

/** Most chunks remembered at once (about 64 GiB of files in progress at 64 KiB per chunk). */
const MAX_ENTRIES = 1 << 20;

/** Chunks of files being assembled, by hash. */
export class PartialChunks {
  readonly #byHash = new Map<string, Place>();
  /** The hashes registered per temp file, to forget them together. */
  readonly #byFile = new Map<string, string[]>();
  /** Read handles of temp files, opened on first read, closed when the file is forgotten. */
  readonly #open = new Map<string, Promise<PositionalFile>>();
  /** Chunks being fetched right now for a temp file (this node's stripe), by hash key. */
  readonly #expected = new Map<string, string>();
  /** Requests waiting for an expected chunk, by hash key (see waitFor). */
  readonly #waiters = new Map<string, ((arrived: boolean) => void)[]>();

  /** Chunks remembered. */
  get size(): number {
    return this.#byHash.size;
  }

  /** `hash` now lies at `offset` of the temp file `tmpAbs` (its bytes are written). */
  add(hash: Hash, tmpAbs: string, offset: number, length: number): void {
    const key = hashKey(hash);
    if (this.#byHash.has(key)) return;
    if (this.#byHash.size >= MAX_ENTRIES) return this.#unexpectKey(key);
    this.#byHash.set(key, { tmpAbs, offset, length });
    let keys = this.#byFile.get(tmpAbs);
    if (!keys) this.#byFile.set(tmpAbs, keys = []);
    keys.push(key);
    this.#expected.delete(key);
    this.#wake(key, true);
  }

  /**
   * `hash` is held in memory (verified by the fetcher) for the batch of small files `owner`,
   * until forget(owner): servable as it is, since memory, unlike a temp file, does not change.
   */
  keep(owner: string, hash: Hash, bytes: Uint8Array): void {
    const key = hashKey(hash);
    if (this.#byHash.has(key)) return;
    if (this.#byHash.size >= MAX_ENTRIES) return this.#unexpectKey(key);
    this.#byHash.set(key, { tmpAbs: owner, offset: 0, length: bytes.length, bytes });
    let keys = this.#byFile.get(owner);
    if (!keys) this.#byFile.set(owner, keys = []);
    keys.push(key);
    this.#expected.delete(key);
    this.#wake(key, true);
  }

  /**
   * This node is now fetching `hashes` for the temp file `tmpAbs` (its own stripe, first): a
   * member that asks for one of them meanwhile waits for it (waitFor) instead of hearing at
   * once that it is missing and asking the origin, whose uplink would then carry it twice.
   */
  expect(tmpAbs: string, hashes: readonly Hash[]): void {
    let keys = this.#byFile.get(tmpAbs);
    if (!keys) this.#byFile.set(tmpAbs, keys = []);
    for (const h of hashes) {
      const key = hashKey(h);
      if (this.#byHash.has(key) || this.#expected.size >= MAX_ENTRIES) continue;
      this.#expected.set(key, tmpAbs);
      keys.push(key);
    }
  }

  /**
   * Wait at most `ms` for a chunk this node is fetching right now (see expect): true once it
   * can be read, false at once if it is not expected, or when the time is up or the file is
   * given up. The wait must stay well below the asking member's stall limit.
   */
  waitFor(hash: Hash, ms: number): Promise<boolean> {
    const key = hashKey(hash);
    if (this.#byHash.has(key)) return Promise.resolve(true);
    if (!this.#expected.has(key)) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (arrived: boolean) => {
        clearTimeout(timer);
        resolve(arrived);
      };
      const timer = setTimeout(() => {
        const list = this.#waiters.get(key);
        const at = list?.indexOf(done) ?? -1;
        if (at >= 0) list!.splice(at, 1);
        if (list?.length === 0) this.#waiters.delete(key);
        resolve(false);
      }, ms);
      let list = this.#waiters.get(key);
      if (!list) this.#waiters.set(key, list = []);
      list.push(done);
    });
  }

  /**
   * This node is no longer fetching `hashes` for `owner` right now (its fetch ended without
   * them, or its stripe changed): requests for them stop waiting.
   */
  unexpect(owner: string, hashes: readonly Hash[]): void {
    for (const h of hashes) {
      const key = hashKey(h);
      if (this.#expected.get(key) === owner) this.#unexpectKey(key);
    }
  }

  #unexpectKey(key: string): void {
    this.#expected.delete(key);
    this.#wake(key, false);
  }

  /** Requests waiting on a chunk: it arrived, or will not. */
  #wake(key: string, arrived: boolean): void {
    const list = this.#waiters.get(key);
    if (!list) return;
    this.#waiters.delete(key);
    for (const done of list) done(arrived);
  }

  /** Forget every chunk of the temp file `tmpAbs` (renamed into place, or given up). */
  forget(tmpAbs: string): void {
    for (const key of this.#byFile.get(tmpAbs) ?? []) {
      if (this.#byHash.get(key)?.tmpAbs === tmpAbs) this.#byHash.delete(key);
      if (this.#expected.get(key) === tmpAbs) {
        this.#expected.delete(key);
        this.#wake(key, false);
      }
    }
    this.#byFile.delete(tmpAbs);
    const file = this.#open.get(tmpAbs);
    this.#open.delete(tmpAbs);
    file?.then((f) => f.close(), () => {});
  }

  /** The chunk's bytes, verified, or null if no temp file holds it (any more). */
  async read(hash: Hash): Promise<Uint8Array | null> {
    const place = this.#byHash.get(hashKey(hash));
    if (!place) return null;
    if (place.bytes) return place.bytes;
    let opening = this.#open.get(place.tmpAbs);
    if (!opening) {
      opening = openPositional(place.tmpAbs);
      this.#open.set(place.tmpAbs, opening);
      opening.catch(() => {
        if (this.#open.get(place.tmpAbs) === opening) this.#open.delete(place.tmpAbs);
      });
    }
    try {
      const bytes = new Uint8Array(place.length);
      const file = await opening;
      if (!(await file.readAt(place.offset, bytes))) return null;
      return hashEquals(sha256(bytes), hash) ? bytes : null;
    } catch {
      return null; // renamed or removed meanwhile: not ours to serve any more
    }
  }
}

/**
 * The stripe a chunk of a batch of small files belongs to, by its hash: those files are
 * fetched together, not in file order, so the first byte deals them out evenly.
 */
export function stripeOfHash(hash: Hash, count: number): number {
  return hash[0] % count;
}

/** Chunks per stripe block of a large file: runs of about 4 MiB, each written in one piece. */
export const STRIPE_BLOCK_CHUNKS = 64;

/** Files smaller than this are dealt in smaller blocks (see stripeBlockChunks). */
const LARGE_STRIPE_FILE_BYTES = 64 << 20;

/**
 * Chunks per stripe block for a file of `size` bytes: STRIPE_BLOCK_CHUNKS from 64 MiB up, 4
 * below (about 300 KiB). With 4 MiB blocks, a file of a few MiB was one block, so it fell
 * wholly in one member's stripe and the others fetched it from the origin as before. Every
 * member computes the same value from the committed size.
 */
export function stripeBlockChunks(size: number): number {
  return size >= LARGE_STRIPE_FILE_BYTES ? STRIPE_BLOCK_CHUNKS : 4;
}

/** This node's share of a file several members fetch at once (see stripeOf). */
export interface Stripe {
  /** This node's position among the members fetching (0-based). */
  index: number;
  /** How many members fetch. */
  count: number;
  /** The other members fetching, whose stripes this node fetches from them first. */
  others: string[];
  /** Chunks per block (see stripeBlockChunks). */
  blockChunks: number;
}

/**
 * The stripe a file's chunk belongs to: blocks of STRIPE_BLOCK_CHUNKS chunks, dealt to the
 * fetching members in turn. Each member fetches its own stripe first, from every member (the
 * origin is the one that has it early on), then the other stripes from the members they belong
 * to, which by then mostly hold them (the origin sends only what they lack): the origin's uplink
 * carries the file about once, not once per member.
 */
export function stripeOf(
  chunkIndex: number,
  count: number,
  blockChunks: number = STRIPE_BLOCK_CHUNKS,
): number {
  return Math.floor(chunkIndex / blockChunks) % count;
}

/**
 * This node's stripe among `fetching` (member ids, any order) of a file of `size` bytes, or
 * null if it is not one of them.
 */
export function stripeFor(
  self: string,
  fetching: readonly string[],
  size: number = LARGE_STRIPE_FILE_BYTES,
): Stripe | null {
  const sorted = [...new Set(fetching)].sort();
  const index = sorted.indexOf(self);
  if (index < 0) return null;
  return {
    index,
    count: sorted.length,
    others: sorted.filter((m) => m !== self),
    blockChunks: stripeBlockChunks(size),
  };
}
