/**
 * The objects one writer (a scan, one file's materialization) put into the packs, so that it
 * makes exactly those durable before the KV entries that refer to them (PackStore.flushOnly),
 * instead of every object pending in the packs. A member being pushed 388 MiB took 2 s to record one directory
 * and 1.2 s for 37 more: each record waited for all the pushed objects to be flushed first.
 */
import type { Hash } from "../chunk/mod.ts";
import type { NodeSink } from "../merkle/mod.ts";
import type { PackStore } from "./packs.ts";

/** A NodeSink into the packs that remembers what it put until flushed. */
export class KeptObjects implements NodeSink {
  #hashes: Hash[] = [];

  constructor(private readonly packs: PackStore) {}

  /** Put an object into the packs (pending until flushed), remembering it. */
  put(hash: Hash, bytes: Uint8Array): void {
    this.packs.put(hash, bytes);
    this.#hashes.push(hash);
  }

  /**
   * Remember an object this writer read from the packs and will name in its records: if it is
   * still pending (a push put it and has not flushed yet), this writer's flush makes it durable
   * too. Objects already durable cost nothing then.
   */
  note(hash: Hash): void {
    if (this.packs.hasPending(hash)) this.#hashes.push(hash);
  }

  /** Make every object put or noted here so far durable; objects flushed meanwhile cost nothing. */
  async flush(): Promise<void> {
    if (this.#hashes.length === 0) return;
    const hashes = this.#hashes;
    this.#hashes = [];
    try {
      await this.packs.flushOnly(hashes);
    } catch (e) {
      this.#hashes = hashes.concat(this.#hashes); // still owed by the next flush
      throw e;
    }
  }
}
