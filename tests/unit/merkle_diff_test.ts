/**
 * Diff of file trees: equal to a brute-force set difference over many seeded random edits
 * (insert, delete, replace and copy runs; 0..20,000 chunks; trees of different heights), the
 * nodes a copy needs, and the headline case: a one-byte insert into a 64 GiB file's chunk list
 * (a million chunk hashes) fetches fewer than 50 nodes and changes O(log n) nodes.
 */
import assert from "node:assert/strict";
import { sha256 } from "../../src/chunk/mod.ts";
import type { Hash } from "../../src/chunk/mod.ts";
import {
  buildDirTree,
  buildFileTree,
  DIFF_FETCH_CONCURRENCY,
  diffFileTrees,
  diffMissingNodes,
  diffTreeObjects,
  EMPTY_FILE_ROOT,
  fetchNode,
  MemoryNodeStore,
  MerkleIntegrityError,
  MerkleMissingNodeError,
  type NodeSource,
  walkFileChunks,
} from "../../src/merkle/mod.ts";

interface TestChunk {
  hash: Hash;
  length: number;
}

function rng(seed: number): () => number {
  let s = (seed * 2654435761 + 1) >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

function randomHash(next: () => number): Hash {
  const h = new Uint8Array(32);
  const v = new DataView(h.buffer);
  for (let i = 0; i < 32; i += 4) v.setUint32(i, next());
  return h;
}

function freshRun(next: () => number, n: number): TestChunk[] {
  return Array.from(
    { length: n },
    () => ({ hash: randomHash(next), length: 1 + (next() % 100_000) }),
  );
}

/** Apply 1-5 random edits; `repeats` also allows copying runs (chunks then repeat). */
function randomEdit(chunks: TestChunk[], next: () => number, repeats: boolean): TestChunk[] {
  const out = chunks.slice();
  const ops = 1 + (next() % 5);
  for (let i = 0; i < ops; i++) {
    const pos = next() % (out.length + 1);
    const run = 1 + (next() % (next() % 4 === 0 ? 3000 : 20));
    switch (next() % (repeats ? 4 : 3)) {
      case 0:
        out.splice(pos, 0, ...freshRun(next, run));
        break;
      case 1:
        out.splice(pos, run);
        break;
      case 2:
        out.splice(pos, run, ...freshRun(next, 1 + (next() % (run + 2))));
        break;
      default: {
        const from = next() % (out.length + 1);
        out.splice(pos, 0, ...out.slice(from, from + run));
      }
    }
  }
  return out;
}

/** Distinct hashes of `b` (first occurrence order) that are not in `a`. */
/** A cheap exact key for a hash (hex is slow at this volume). */
function key(h: Hash): string {
  return String.fromCharCode.apply(null, h as unknown as number[]);
}

function bruteMissing(a: TestChunk[], b: TestChunk[]): string[] {
  const seen = new Set(a.map((c) => key(c.hash)));
  const out: string[] = [];
  for (const c of b) {
    const k = key(c.hash);
    if (!seen.has(k)) out.push(k);
    seen.add(k);
  }
  return out;
}

const hexes = (hs: Hash[]) => hs.map(key);

function storeHexes(s: MemoryNodeStore): Set<string> {
  return new Set([...s.hashes()].map(key));
}

function minus(a: Set<string>, b: Set<string>): Set<string> {
  return new Set([...a].filter((x) => !b.has(x)));
}

function pickSize(next: () => number): number {
  const small = [0, 1, 2, 3, 63, 64, 65, 128, 1000];
  return next() % 3 === 0 ? small[next() % small.length] : next() % 20_001;
}

async function copyStore(s: MemoryNodeStore): Promise<MemoryNodeStore> {
  const c = new MemoryNodeStore();
  for (const h of s.hashes()) c.put(h, await s.getNode(h));
  return c;
}

Deno.test("diffFileTrees equals brute-force set difference on random edits", async () => {
  for (let trial = 0; trial < 120; trial++) {
    const next = rng(trial);
    const repeats = trial % 2 === 1;
    const a = freshRun(next, pickSize(next));
    const b = randomEdit(a, next, repeats);
    const sa = new MemoryNodeStore();
    const sb = new MemoryNodeStore();
    const ra = buildFileTree(a, sa);
    const rb = buildFileTree(b, sb);
    const setA = new Set(a.map((c) => key(c.hash)));
    const setB = new Set(b.map((c) => key(c.hash)));
    const want = bruteMissing(a, b);
    const ctx = `trial ${trial}: ${a.length} -> ${b.length} chunks`;

    // With the local side's chunk knowledge the answer is exact, repeats or not.
    const exact = await diffFileTrees(ra.root, rb.root, sa, sb, (h) => setA.has(key(h)));
    assert.deepEqual(hexes(exact), want, ctx);
    const back = await diffFileTrees(
      rb.root,
      ra.root,
      sb,
      sa,
      (h) => Promise.resolve(setB.has(key(h))),
    );
    assert.deepEqual(hexes(back), bruteMissing(b, a), ctx);

    // From the trees alone: exact when no chunk repeats, else never missing one.
    const plain = hexes(await diffFileTrees(ra.root, rb.root, sa, sb));
    if (!repeats) assert.deepEqual(plain, want, ctx);
    const plainSet = new Set(plain);
    assert.ok(want.every((h) => plainSet.has(h)), ctx);
    assert.ok(plain.every((h) => setB.has(h)), ctx);
    assert.equal(new Set(plain).size, plain.length, ctx);

    // Nothing local: every distinct chunk. Same tree: nothing, and no fetch.
    assert.deepEqual(hexes(await diffFileTrees(null, rb.root, sa, sb)), bruteMissing([], b), ctx);
    sb.resetCounters();
    assert.deepEqual(await diffFileTrees(rb.root, rb.root, sb, sb), []);
    assert.equal(sb.fetches, 0);

    // Nodes: with the local store's knowledge, exactly the nodes only the remote tree has.
    const nodesExact = await diffMissingNodes(ra.root, rb.root, sa, sb, (h) => sa.has(h));
    assert.deepEqual(new Set(hexes(nodesExact)), minus(storeHexes(sb), storeHexes(sa)), ctx);
    const nodes = await diffMissingNodes(ra.root, rb.root, sa, sb);
    const nodesB = storeHexes(sb);
    assert.ok(hexes(nodes).every((h) => nodesB.has(h)), ctx);

    // Copying those nodes makes the remote file readable locally.
    if (trial % 10 === 0) {
      const local = await copyStore(sa);
      for (const h of nodes) local.put(h, await sb.getNode(h));
      const walked = [];
      for await (const c of walkFileChunks(rb.root, local)) walked.push(c);
      assert.deepEqual(walked.map((c) => key(c.hash)), b.map((c) => key(c.hash)), ctx);
      const objs = await diffTreeObjects(ra.root, rb.root, sa, sb);
      assert.deepEqual(hexes(objs.nodes), hexes(nodes));
      assert.deepEqual(hexes(objs.chunks), plain);
    }
  }
});

Deno.test("diff across trees of very different heights", async () => {
  const next = rng(555);
  const big = freshRun(next, 20_000);
  const small = big.slice(0, 50);
  const sBig = new MemoryNodeStore();
  const sSmall = new MemoryNodeStore();
  const rBig = buildFileTree(big, sBig);
  const rSmall = buildFileTree(small, sSmall);
  assert.deepEqual(
    hexes(await diffFileTrees(rSmall.root, rBig.root, sSmall, sBig)),
    bruteMissing(small, big),
  );
  assert.deepEqual(await diffFileTrees(rBig.root, rSmall.root, sBig, sSmall), []);
  assert.deepEqual(
    hexes(await diffFileTrees(EMPTY_FILE_ROOT, rBig.root, sSmall, sBig)),
    bruteMissing([], big),
  );
  assert.deepEqual(await diffFileTrees(rBig.root, EMPTY_FILE_ROOT, sBig, sSmall), []);
});

Deno.test("one-byte insert into a 64 GiB file's chunk list: < 50 fetches, O(log n) nodes", async () => {
  const n = 1_000_000;
  const next = rng(2024);
  // All hashes from one pool: 32 bytes each, a million plus the new ones.
  const pool = new Uint8Array(32 * (n + 16));
  const words = new Uint32Array(pool.buffer);
  for (let i = 0; i < words.length; i++) words[i] = next();
  const hashAt = (i: number) => pool.subarray(32 * i, 32 * i + 32);
  const original = function* (): Generator<TestChunk> {
    for (let i = 0; i < n; i++) yield { hash: hashAt(i), length: 65536 };
  };
  const sa = new MemoryNodeStore();
  const ra = buildFileTree(original(), sa);
  assert.equal(ra.size, n * 65536);
  const nodesA = storeHexes(sa);
  const height = (await fetchNode(sa, ra.root)).level + 1;

  for (const [k, at] of [0, 1000, 500_000, n - 1].entries()) {
    // A one-byte insert splits one chunk into two new ones.
    const inserted = [
      { hash: hashAt(n + 2 * k), length: 30_000 },
      { hash: hashAt(n + 2 * k + 1), length: 35_537 },
    ];
    const edited = function* (): Generator<TestChunk> {
      for (let i = 0; i < n; i++) {
        if (i === at) yield* inserted;
        else yield { hash: hashAt(i), length: 65536 };
      }
    };
    const sb = new MemoryNodeStore();
    const rb = buildFileTree(edited(), sb);
    assert.equal(rb.size, ra.size + 1);
    const changed = minus(storeHexes(sb), nodesA).size;
    assert.ok(changed <= 3 * height, `${changed} changed nodes, tree height ${height}`);

    sa.resetCounters();
    sb.resetCounters();
    const missing = await diffFileTrees(ra.root, rb.root, sa, sb);
    assert.deepEqual(hexes(missing), hexes(inserted.map((c) => c.hash)));
    const fetches = sa.fetches + sb.fetches;
    assert.ok(fetches < 50, `diff fetched ${fetches} nodes (insert at chunk ${at})`);

    sa.resetCounters();
    sb.resetCounters();
    assert.deepEqual(hexes(await diffFileTrees(rb.root, ra.root, sb, sa)), [key(hashAt(at))]);
    assert.ok(sa.fetches + sb.fetches < 50);
    const nodes = await diffMissingNodes(ra.root, rb.root, sa, sb);
    assert.equal(nodes.length, changed);
  }
});

/** A source that answers later, counting how many requests are in flight at once. */
class SlowSource implements NodeSource {
  inFlight = 0;
  maxInFlight = 0;
  constructor(readonly inner: NodeSource) {}
  async getNode(hash: Hash): Promise<Uint8Array> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await new Promise((r) => setTimeout(r, 0));
    try {
      return await this.inner.getNode(hash);
    } finally {
      this.inFlight--;
    }
  }
}

Deno.test("a slow remote source gives the same answer with bounded concurrency", async () => {
  const next = rng(31337);
  const a = freshRun(next, 6000);
  const b = randomEdit(a, next, false);
  const sa = new MemoryNodeStore();
  const sb = new MemoryNodeStore();
  const ra = buildFileTree(a, sa);
  const rb = buildFileTree(b, sb);
  const slow = new SlowSource(sb);
  assert.deepEqual(hexes(await diffFileTrees(ra.root, rb.root, sa, slow)), bruteMissing(a, b));
  const all = new SlowSource(sb);
  assert.deepEqual(hexes(await diffFileTrees(null, rb.root, sa, all)), bruteMissing([], b));
  assert.ok(all.maxInFlight > 1 && all.maxInFlight <= DIFF_FETCH_CONCURRENCY);
});

Deno.test("diff refuses bad remote nodes and mixed tree kinds", async () => {
  const next = rng(8);
  const a = freshRun(next, 3000);
  const b = randomEdit(a, next, false);
  const sa = new MemoryNodeStore();
  const sb = new MemoryNodeStore();
  const ra = buildFileTree(a, sa);
  const rb = buildFileTree(b, sb);
  // Every remote node replaced by corrupt bytes: the first fetch of a differing node fails.
  const corrupt = new MemoryNodeStore();
  for (const h of sb.hashes()) {
    const bytes = (await sb.getNode(h)).slice();
    bytes[bytes.length - 1] ^= 0xff;
    corrupt.put(h, bytes);
  }
  await assert.rejects(diffFileTrees(ra.root, rb.root, sa, corrupt), (e: unknown) => {
    assert.ok(e instanceof MerkleIntegrityError);
    assert.ok(storeHexes(sb).has(key(e.hash)));
    return true;
  });
  await assert.rejects(
    diffFileTrees(ra.root, rb.root, sa, new MemoryNodeStore()),
    MerkleMissingNodeError,
  );
  const dir = buildDirTree(
    [{ path: "x", kind: "file", root: sha256(Uint8Array.of(1)), size: 1, mode: 0o644, mtime: 1 }],
    sb,
  );
  await assert.rejects(diffFileTrees(ra.root, dir.root, sa, sb), MerkleIntegrityError);
  await assert.rejects(diffMissingNodes(dir.root, rb.root, sb, sb), MerkleIntegrityError);
});
