/**
 * Deno KV caps one atomic operation at 1,000 mutations and about 800 KiB of keys and values
 * (and 64 KiB per value). KvBatch collects sets and deletes and commits them in as few atomic
 * operations as those limits allow. Callers order their writes so that a crash between two
 * commits leaves a state they can recover from (referenced data first, references last).
 */

/**
 * Mutations per atomic commit: each commit is an fsync (and the scanner flushes packs before
 * it), so commits are made as large as the 1,000 hard limit allows, with room for checks.
 */
const MAX_MUTATIONS = 900;
/** Approximate payload bytes per atomic commit, below the 800 KiB limit. */
const MAX_BYTES = 700 * 1024;
/** Deno KV's limit on one value, serialized. */
export const KV_MAX_VALUE_BYTES = 64 * 1024;

/** Rough serialized size of a key or value; only used to split batches early. */
function approximateSize(value: unknown): number {
  if (value === null || value === undefined) return 1;
  if (typeof value === "string") return value.length * 3 + 4;
  if (typeof value === "number" || typeof value === "bigint" || typeof value === "boolean") {
    return 9;
  }
  if (value instanceof Uint8Array) return value.byteLength + 4;
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + approximateSize(v), 2);
  if (typeof value === "object") {
    let n = 2;
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      n += k.length + 2 + approximateSize(v);
    }
    return n;
  }
  return 16;
}

/** Accumulates KV mutations and commits them in limit-respecting atomic operations. */
export class KvBatch {
  #op: Deno.AtomicOperation;
  #mutations = 0;
  #bytes = 0;
  #commits = 0;
  /** Serializes callers: a commit must not interleave with queuing into the same operation. */
  #queue: Promise<unknown> = Promise.resolve();

  /**
   * @param beforeCommit runs before every atomic commit; the scanner uses it to make pack
   *   files durable before any KV entry that refers to their objects is committed.
   */
  constructor(
    private readonly kv: Deno.Kv,
    private readonly beforeCommit?: () => Promise<void>,
  ) {
    this.#op = kv.atomic();
  }

  /** Number of atomic commits made so far. */
  get commits(): number {
    return this.#commits;
  }

  /** Queue a set; commits the pending operation first if this one would overflow it. */
  set(key: Deno.KvKey, value: unknown): Promise<void> {
    const size = approximateSize(key) + approximateSize(value);
    if (size > KV_MAX_VALUE_BYTES) {
      return Promise.reject(
        new RangeError(`KV value for ${JSON.stringify(key.map(String))} is too large`),
      );
    }
    return this.#serial(async () => {
      await this.#reserve(size);
      this.#op.set(key, value);
    });
  }

  /** Queue a delete. */
  delete(key: Deno.KvKey): Promise<void> {
    return this.#serial(async () => {
      await this.#reserve(approximateSize(key));
      this.#op.delete(key);
    });
  }

  /** Commit whatever is queued. */
  flush(): Promise<void> {
    return this.#serial(() => this.#commit());
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #commit(): Promise<void> {
    if (this.#mutations === 0) return;
    await this.beforeCommit?.();
    const result = await this.#op.commit();
    if (!result.ok) throw new Error("Deno KV atomic commit failed");
    this.#commits++;
    this.#op = this.kv.atomic();
    this.#mutations = 0;
    this.#bytes = 0;
  }

  async #reserve(size: number): Promise<void> {
    if (this.#mutations + 1 > MAX_MUTATIONS || this.#bytes + size > MAX_BYTES) {
      await this.#commit();
    }
    this.#mutations++;
    this.#bytes += size;
  }
}
