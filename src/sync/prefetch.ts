/**
 * Objects of many small files fetched ahead in two pipelined requests, held in memory while
 * those files are written.
 *
 * Writing a small file that is new to this node takes two round trips to a peer (its tree
 * node, then its chunk) before any local work can start. For a thousand small files those
 * round trips, not bandwidth, set the pace. Fetching every root of a batch at once, then every
 * chunk those roots list, turns 2 x N round trips into two pipelined streams.
 */
import { type Hash, hashEquals, hashKey } from "../chunk/mod.ts";
import type { IndexRecord } from "../fsm/mod.ts";
import { decodeNode, EMPTY_FILE_ROOT } from "../merkle/mod.ts";
import type { LocalStore } from "../store/mod.ts";
import type { RemoteObjects } from "./engine.ts";
import { type PartialChunks, type Stripe, stripeOfHash } from "./partial_chunks.ts";

/**
 * A batch that other members fetch at the same time (they are catching up on the same
 * commits): each fetches its stripe of the chunks from everyone, serving them from memory
 * meanwhile, then the other stripes from their members first (see partial_chunks.ts).
 */
export interface PrefetchShare {
  chunks: PartialChunks;
  /** The batch's name in `chunks`: forget it once the batch is written. */
  owner: string;
  stripe: Stripe;
}

/** Files up to this size are prefetched (one leaf node of up to a few chunks). */
export const PREFETCH_MAX_FILE_BYTES = 1 << 20;

/** Objects held in memory for a batch of files, by hash. */
export class PrefetchedObjects {
  readonly #objects = new Map<string, Uint8Array>();
  #bytes = 0;

  /** The object's bytes if prefetched. */
  get(hash: Hash): Uint8Array | undefined {
    return this.#objects.get(hashKey(hash));
  }

  /** Keep an object (verified by the fetcher). */
  add(hash: Hash, bytes: Uint8Array): void {
    const key = hashKey(hash);
    if (this.#objects.has(key)) return;
    this.#objects.set(key, bytes);
    this.#bytes += bytes.length;
  }

  /** Objects held. */
  get size(): number {
    return this.#objects.size;
  }

  /** Bytes held. */
  get bytes(): number {
    return this.#bytes;
  }
}

/** Small files first in their own batches, the rest apart: see prefetchObjects. */
export function isPrefetchable(rec: IndexRecord): boolean {
  return !rec.deleted && rec.kind === "file" && rec.size <= PREFETCH_MAX_FILE_BYTES &&
    !hashEquals(rec.root, EMPTY_FILE_ROOT);
}

/**
 * Fetch the tree nodes of `records` (small files) that this node lacks, then the chunks those
 * nodes list that are neither in a local file nor in the packs. Fetch failures are not errors
 * here: whatever is missing is fetched again, file by file, when the file is written.
 */
export async function prefetchObjects(
  store: LocalStore,
  remote: RemoteObjects,
  records: IndexRecord[],
  share: PrefetchShare | null = null,
): Promise<PrefetchedObjects> {
  const out = new PrefetchedObjects();
  const preferred = [...new Set(records.map((r) => r.origin).filter((o) => o))];
  // Every lookup of a step is asked at once: the store reads them in batched KV operations.
  const held = (h: Hash) => store.holds(h);
  const distinctRoots = [...new Map(records.map((r) => [hashKey(r.root), r.root])).values()];
  const rootHeld = await Promise.all(distinctRoots.map(held));
  const roots = distinctRoots.filter((_, i) => !rootHeld[i]);
  if (roots.length > 0) {
    await remote.fetch(roots, (h, bytes) => {
      out.add(h, bytes);
      return Promise.resolve();
    }, preferred);
  }
  const wanted = new Map<string, Hash>();
  for (const r of records) {
    const bytes = out.get(r.root) ?? null;
    if (bytes === null) continue; // held locally already, or not fetched: the slow path decides
    let node;
    try {
      node = decodeNode(bytes);
    } catch {
      continue; // the materializer reports a bad node with its path
    }
    if (node.type !== "file-leaf") continue;
    for (const c of node.chunks) wanted.set(hashKey(c.hash), c.hash);
  }
  const candidates = [...wanted.values()];
  const chunkHeld = await Promise.all(candidates.map(held));
  const chunks = candidates.filter((_, i) => !chunkHeld[i]);
  const keep = (h: Hash, bytes: Uint8Array) => {
    out.add(h, bytes);
    share?.chunks.keep(share.owner, h, bytes);
    return Promise.resolve();
  };
  if (share === null) {
    if (chunks.length > 0) await remote.fetch(chunks, keep, preferred);
    return out;
  }
  // Tree nodes are a few bytes each: not worth a stripe. The chunks are the bytes.
  const { stripe } = share;
  const own = chunks.filter((h) => stripeOfHash(h, stripe.count) === stripe.index);
  share.chunks.expect(share.owner, own);
  try {
    if (own.length > 0) await remote.fetch(own, keep, preferred);
  } finally {
    share.chunks.unexpect(share.owner, own.filter((h) => out.get(h) === undefined));
  }
  const rest = chunks.filter((h) => out.get(h) === undefined);
  if (rest.length > 0) await remote.fetch(rest, keep, stripe.others, true);
  return out;
}
