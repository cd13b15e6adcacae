/**
 * Another node of the cluster, for materializer tests: a store of its own that commits files
 * (as that node would) and serves their Merkle nodes and chunks, counting what it served.
 */
import { type Hash } from "../../src/chunk/mod.ts";
import type { IndexRecord } from "../../src/fsm/mod.ts";
import { walkFileChunks } from "../../src/merkle/mod.ts";
import { LocalStore } from "../../src/store/mod.ts";
import { type MaterializeSources, scanTree } from "../../src/sync/mod.ts";

export const PAST = Date.UTC(2021, 5, 1, 12, 0, 0, 123);

/** The cluster as seen from the node under test: a source tree serving nodes and chunks. */
export class FakeRemote implements MaterializeSources {
  chunkCalls = 0;
  chunksServed = 0;
  nodesServed = 0;
  corrupt = false;
  /** Runs inside fetchChunks before any chunk is delivered (to look at the disk meanwhile). */
  during: (() => Promise<void>) | null = null;
  #version = 100;
  #writes = 0;

  private constructor(readonly store: LocalStore) {}

  static async open(): Promise<FakeRemote> {
    return new FakeRemote(await LocalStore.open(await Deno.makeTempDir({ prefix: "fs-remote-" })));
  }

  nodes = {
    getNode: (hash: Hash) => {
      this.nodesServed++;
      return this.store.packs.get(hash);
    },
  };

  async fetchChunks(hashes: Hash[], onChunk: (h: Hash, b: Uint8Array) => Promise<void>) {
    this.chunkCalls++;
    await this.during?.();
    for (const h of hashes) {
      // Chunks from the tree; Merkle nodes (a tree fetched ahead) from the packs.
      const held = await this.store.readObject(h);
      if (held === null) throw new Error(`the remote does not hold ${h}`);
      const bytes = held.slice();
      this.chunksServed++;
      if (this.corrupt) bytes[0] ^= 1;
      await onChunk(h, bytes);
    }
  }

  /**
   * Hand every object (tree node or chunk) to `onObject`, as the cluster's object fetcher
   * would, uncounted; the shape of RemoteObjects.fetch.
   */
  async deliver(
    hashes: Hash[],
    onObject: (h: Hash, b: Uint8Array) => Promise<void>,
  ): Promise<{ missing: Hash[] }> {
    for (const h of hashes) {
      const held = await this.store.readObject(h);
      if (held === null) throw new Error(`the remote does not hold ${h}`);
      await onObject(h, held.slice());
    }
    return { missing: [] };
  }

  /** Commit a file with this content (as another node would) and return its index record. */
  async file(
    path: string,
    content: Uint8Array,
    o: { mode?: number; mtime?: number } = {},
  ): Promise<IndexRecord> {
    const abs = `${this.store.root}/${path}`;
    await Deno.mkdir(abs.slice(0, abs.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(abs, content);
    await Deno.chmod(abs, o.mode ?? 0o644);
    // Distinct mtimes by default, so the source's own scanner sees every rewrite.
    await Deno.utime(abs, new Date(), new Date(o.mtime ?? PAST + 1000 * ++this.#writes));
    await scanTree(this.store, { workers: 0 });
    const rec = (await this.store.files.get(path))!;
    return {
      path,
      version: ++this.#version,
      kind: "file",
      root: rec.root,
      size: rec.size,
      mode: rec.mode,
      mtime: rec.mtime,
      deleted: false,
      origin: "A",
    };
  }

  /** The deletion of a committed file, as the next version. */
  tombstone(of: IndexRecord): IndexRecord {
    return { ...of, version: ++this.#version, deleted: true };
  }

  /** The chunk hashes of a version, in order. */
  async chunks(root: Hash): Promise<Hash[]> {
    const out: Hash[] = [];
    for await (const c of walkFileChunks(root, this.store.packs)) out.push(c.hash);
    return out;
  }

  close() {
    return this.store.close();
  }
}

/** A node under test (its store scanned once, as at start) and a remote, both removed after. */
export async function withNode(fn: (store: LocalStore, remote: FakeRemote) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "fs-node-" });
  const store = await LocalStore.open(dir);
  const remote = await FakeRemote.open();
  try {
    await scanTree(store, { workers: 0 }); // a first scan, as the daemon does at start
    await fn(store, remote);
  } finally {
    await store.close();
    await remote.close();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(remote.store.root, { recursive: true });
  }
}
