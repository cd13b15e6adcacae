/**
 * Token buckets keyed by remote address, to bound how often strangers may knock (connect
 * without being members, attempt a join). The table is bounded: when it is full the entry
 * touched longest ago is forgotten, so a flood from many addresses cannot grow memory.
 */

/** Limits of one bucket. */
export interface RateLimit {
  /** Tokens available at once (burst). */
  burst: number;
  /** Tokens regained per second. */
  perSecond: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Per-key token buckets with a bounded number of keys. */
export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();

  constructor(
    readonly limit: RateLimit,
    private readonly maxKeys = 4096,
    private readonly now: () => number = () => Date.now(),
  ) {
    if (!(limit.burst >= 1) || !(limit.perSecond >= 0)) {
      throw new RangeError("rate limit needs burst >= 1 and perSecond >= 0");
    }
  }

  /** Take one token for `key`; false means the caller is over its rate and must be refused. */
  tryTake(key: string): boolean {
    const t = this.now();
    let b = this.#buckets.get(key);
    if (b === undefined) {
      b = { tokens: this.limit.burst, at: t };
      if (this.#buckets.size >= this.maxKeys) {
        // Map iteration order is insertion order and we re-insert on use: first = stalest.
        const stalest = this.#buckets.keys().next().value;
        if (stalest !== undefined) this.#buckets.delete(stalest);
      }
    } else {
      this.#buckets.delete(key);
      b.tokens = Math.min(this.limit.burst, b.tokens + ((t - b.at) / 1000) * this.limit.perSecond);
      b.at = t;
    }
    this.#buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Keys currently tracked (for tests and status output). */
  get size(): number {
    return this.#buckets.size;
  }
}
