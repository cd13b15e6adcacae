/**
 * Splitting many KV mutations into as few atomic commits as Deno KV allows (1,000 mutations,
 * 80 KiB of keys and 800 KiB of keys plus values per commit). Mutations added as one group
 * always land in the same commit, so a group is all-or-none even when the whole batch is not.
 */

/** One KV write: a set, or a delete when `value` is undefined. */
export interface Mutation {
  key: Deno.KvKey;
  value?: unknown;
}

/** Deno KV's per-commit limits, with room to spare for estimation error. */
export interface CommitLimits {
  mutations: number;
  keyBytes: number;
  bytes: number;
}

export const KV_LIMITS: CommitLimits = { mutations: 1000, keyBytes: 72 * 1024, bytes: 720 * 1024 };

const encoder = new TextEncoder();

/** Upper bound of a key's encoded size. */
export function keySize(key: Deno.KvKey): number {
  let n = 0;
  for (const part of key) {
    if (typeof part === "string") n += 2 * encoder.encode(part).length + 2;
    else if (part instanceof Uint8Array) n += 2 * part.length + 2;
    else n += 10;
  }
  return n;
}

/** Generous estimate of a value's serialized size (V8 serializer). */
export function valueSize(v: unknown): number {
  if (v === null || v === undefined || typeof v === "boolean") return 2;
  if (typeof v === "number" || typeof v === "bigint") return 10;
  if (typeof v === "string") return 2 * v.length + 6;
  if (v instanceof Uint8Array) return v.length + 16;
  if (Array.isArray(v)) return v.reduce((n: number, x) => n + valueSize(x), 8);
  if (typeof v === "object") {
    let n = 8;
    for (const [k, x] of Object.entries(v)) n += 2 * k.length + 6 + valueSize(x);
    return n;
  }
  return 64;
}

/** Accumulates groups of mutations and commits whenever the next group would not fit. */
export class KvBatches {
  #atomic: Deno.AtomicOperation | null = null;
  #mutations = 0;
  #keyBytes = 0;
  #bytes = 0;
  /** Commits made so far. */
  commits = 0;

  constructor(
    private readonly kv: Deno.Kv,
    private readonly limits: CommitLimits = KV_LIMITS,
    private readonly afterCommit?: (commit: number) => void | Promise<void>,
  ) {}

  /** Add mutations that must be committed together. */
  async add(...group: Mutation[]): Promise<void> {
    let keyBytes = 0;
    let bytes = 0;
    for (const m of group) {
      const k = keySize(m.key);
      keyBytes += k;
      bytes += k + (m.value === undefined ? 0 : valueSize(m.value));
    }
    const fits = (muts: number, kb: number, b: number) =>
      muts <= this.limits.mutations && kb <= this.limits.keyBytes && b <= this.limits.bytes;
    if (!fits(group.length, keyBytes, bytes)) {
      throw new RangeError(`a group of ${group.length} KV mutations exceeds one commit`);
    }
    if (!fits(this.#mutations + group.length, this.#keyBytes + keyBytes, this.#bytes + bytes)) {
      await this.flush();
    }
    const a = this.#atomic ??= this.kv.atomic();
    for (const m of group) m.value === undefined ? a.delete(m.key) : a.set(m.key, m.value);
    this.#mutations += group.length;
    this.#keyBytes += keyBytes;
    this.#bytes += bytes;
  }

  /** Commit what is pending (nothing if empty). */
  async flush(): Promise<void> {
    const a = this.#atomic;
    if (!a) return;
    this.#atomic = null;
    this.#mutations = this.#keyBytes = this.#bytes = 0;
    const r = await a.commit();
    if (!r.ok) throw new Error("file index KV commit failed");
    this.commits++;
    await this.afterCommit?.(this.commits);
  }
}
