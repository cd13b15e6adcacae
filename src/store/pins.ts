/**
 * Objects that garbage collection must keep for a while, whatever its rules say: the
 * materializer pins the chunks of a version it is about to replace while it copies them into
 * the packs, because until the rename the old file still holds them and the tree rule would
 * find the fresh pack copies redundant (and a collection that looked before the rename could
 * drop them after it). In memory only: a pin lasts as long as the operation that took it.
 */
import { type Hash, hashKey } from "../chunk/hash.ts";

/** A multiset of pinned hashes. */
export class Pins {
  #counts = new Map<string, number>();

  /** Pin `hashes` until the returned function is called (once). */
  pin(hashes: Iterable<Hash>): () => void {
    const keys = [...hashes].map(hashKey);
    for (const k of keys) this.#counts.set(k, (this.#counts.get(k) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const k of keys) {
        const n = this.#counts.get(k)! - 1;
        if (n === 0) this.#counts.delete(k);
        else this.#counts.set(k, n);
      }
    };
  }

  has(hash: Hash): boolean {
    return this.#counts.has(hashKey(hash));
  }
}
