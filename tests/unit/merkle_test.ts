/**
 * Merkle node format and the per-file tree: committed golden roots (a format change must be
 * deliberate), determinism, streaming vs whole-list builds, offsets from walkFileChunks, the
 * shape rules (fan-out, hard cap, halving, repeated chunks), the strict decoder under
 * truncation, mutation and garbage, and verification of fetched nodes.
 */
import assert from "node:assert/strict";
import { sha256, toHex } from "../../src/chunk/mod.ts";
import type { Hash } from "../../src/chunk/mod.ts";
import {
  buildDirTree,
  buildFileTree,
  decodeNode,
  DIR_NODE_KIND,
  type DirEntry,
  EMPTY_DIR_NODE,
  EMPTY_DIR_ROOT,
  EMPTY_FILE_NODE,
  EMPTY_FILE_ROOT,
  encodeNode,
  fetchDirNode,
  fetchFileNode,
  fetchNode,
  FILE_NODE_KIND,
  FileTreeBuilder,
  fileTreeSize,
  MAX_ENTRIES,
  MAX_NODE_BYTES,
  MemoryNodeStore,
  MerkleDecodeError,
  MerkleInputError,
  MerkleIntegrityError,
  MerkleMissingNodeError,
  type MerkleNode,
  NODE_KIND,
  nodeKindOf,
  walkFileChunks,
} from "../../src/merkle/mod.ts";

/** xorshift32: small, seeded, good enough to drive tests. */
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

function randomChunks(n: number, seed: number, maxLen = 300_000) {
  const next = rng(seed);
  return Array.from({ length: n }, () => ({
    hash: randomHash(next),
    length: 1 + (next() % maxLen),
  }));
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** All nodes of a tree by level, read straight from a memory store through the verifier. */
async function nodesByLevel(root: Hash, store: MemoryNodeStore): Promise<MerkleNode[][]> {
  const levels: MerkleNode[][] = [];
  let frontier = [root];
  for (let depth = 0; depth < 64 && frontier.length > 0; depth++) {
    const nodes = await Promise.all(frontier.map((h) => fetchNode(store, h)));
    levels.unshift(nodes);
    frontier = nodes.flatMap((n) => n.type === "file-inner" ? n.children.map((c) => c.hash) : []);
  }
  return levels;
}

// Golden values: SHA-256 of the format; they change only with FORMAT_VERSION.
const GOLDEN_EMPTY_FILE_ROOT = "b3844634762d8e075473fc1cd774d0f251c6512e27e67e43e7b9ae69efff56f3";
const GOLDEN_1000_ROOT = "a04ffb0cfb085ac5711068cc4798b87b3b1e6527f8bc9eeb649d5bf4906861fa";

function goldenChunks() {
  return Array.from({ length: 1000 }, (_, i) => ({
    hash: sha256(new TextEncoder().encode(`chunk ${i}`)),
    length: 1 + i * 97,
  }));
}

Deno.test("empty file: the root is a constant node with no entries, needing no store", async () => {
  assert.equal(toHex(EMPTY_FILE_ROOT), GOLDEN_EMPTY_FILE_ROOT);
  assert.deepEqual(EMPTY_FILE_NODE, Uint8Array.of(1, FILE_NODE_KIND, 0, 0, 0));
  assert.deepEqual(EMPTY_FILE_ROOT, sha256(EMPTY_FILE_NODE));
  assert.deepEqual(EMPTY_DIR_ROOT, sha256(EMPTY_DIR_NODE));
  const store = new MemoryNodeStore();
  const r = buildFileTree([], store);
  assert.deepEqual(r, { root: EMPTY_FILE_ROOT, size: 0, chunkCount: 0, nodeCount: 1 });
  assert.ok(store.has(EMPTY_FILE_ROOT));
  const empty = new MemoryNodeStore();
  assert.deepEqual(await collect(walkFileChunks(EMPTY_FILE_ROOT, empty)), []);
  assert.equal(await fileTreeSize(EMPTY_FILE_ROOT, empty), 0);
  assert.equal(empty.fetches, 0);
});

Deno.test("golden root of a fixed chunk list", () => {
  const r = buildFileTree(goldenChunks(), new MemoryNodeStore());
  assert.equal(toHex(r.root), GOLDEN_1000_ROOT);
  assert.equal(r.chunkCount, 1000);
  assert.equal(r.size, 1000 + 97 * (999 * 1000) / 2);
});

Deno.test("determinism: same chunks give the same root, streamed or whole", () => {
  for (const n of [1, 2, 63, 64, 65, 1000, 5000]) {
    const chunks = randomChunks(n, n);
    const a = buildFileTree(chunks, new MemoryNodeStore());
    const b = buildFileTree(
      chunks.map((c) => ({ ...c, hash: c.hash.slice() })),
      new MemoryNodeStore(),
    );
    const builder = new FileTreeBuilder(new MemoryNodeStore());
    // Reusing one hash buffer for every add must not matter: the builder copies.
    const buf = new Uint8Array(32);
    for (const c of chunks) {
      buf.set(c.hash);
      builder.add(buf, c.length);
    }
    const s = builder.finish();
    assert.deepEqual(a, b);
    assert.deepEqual(a, s);
    assert.equal(a.chunkCount, n);
    assert.equal(a.size, chunks.reduce((t, c) => t + c.length, 0));
  }
});

Deno.test("a one-chunk file is a one-entry leaf", async () => {
  const store = new MemoryNodeStore();
  const h = sha256(Uint8Array.of(1));
  const r = buildFileTree([{ hash: h, length: 7 }], store);
  assert.equal(r.nodeCount, 1);
  const node = await fetchFileNode(store, r.root);
  assert.deepEqual(node, {
    type: "file-leaf",
    level: 0,
    chunks: [{ hash: h, length: 7 }],
    size: 7,
  });
});

Deno.test("walkFileChunks yields every chunk in order with the right offsets", async () => {
  for (const n of [1, 64, 1000, 20_000]) {
    const chunks = randomChunks(n, 1000 + n);
    const store = new MemoryNodeStore();
    const r = buildFileTree(chunks, store);
    const walked = await collect(walkFileChunks(r.root, store));
    assert.equal(walked.length, n);
    let offset = 0;
    for (let i = 0; i < n; i++) {
      assert.deepEqual(walked[i], { hash: chunks[i].hash, offset, length: chunks[i].length });
      offset += chunks[i].length;
    }
    assert.equal(await fileTreeSize(r.root, store), offset);
  }
});

Deno.test("shape: fan-out near 64, levels at least halve, nodes bounded", async () => {
  const n = 20_000;
  const store = new MemoryNodeStore();
  const r = buildFileTree(randomChunks(n, 7), store);
  const levels = await nodesByLevel(r.root, store);
  assert.equal(levels[levels.length - 1].length, 1);
  assert.equal(r.nodeCount, levels.reduce((t, l) => t + l.length, 0));
  const leaves = levels[0].length;
  const fanout = n / leaves;
  assert.ok(fanout > 40 && fanout < 100, `leaf fan-out ${fanout}`);
  for (let k = 0; k < levels.length; k++) {
    for (const node of levels[k]) {
      assert.equal(node.level, k);
      const entries = node.type === "file-leaf"
        ? node.chunks.length
        : (node as { children: unknown[] }).children.length;
      assert.ok(entries >= 1 && entries <= MAX_ENTRIES);
    }
    if (k > 0) assert.ok(levels[k].length <= Math.ceil(levels[k - 1].length / 2));
  }
});

Deno.test("shape: no boundaries hits the hard cap; all boundaries still halve", async () => {
  const n = 5000;
  // Byte 3 odd: uint32 & 63 is never 0, so only the 1024-entry cap ends leaves.
  const never = randomChunks(n, 11).map((c) => ({
    ...c,
    hash: c.hash.map((b, i) => i === 3 ? b | 1 : b),
  }));
  const s1 = new MemoryNodeStore();
  const r1 = buildFileTree(never, s1);
  const l1 = await nodesByLevel(r1.root, s1);
  assert.deepEqual(l1[0].map((x) => (x as { chunks: unknown[] }).chunks.length), [
    1024,
    1024,
    1024,
    1024,
    904,
  ]);
  // Every chunk a boundary: leaves of two (the first entry never closes a node).
  const always = randomChunks(n, 12).map((c) => ({
    ...c,
    hash: c.hash.map((b, i) => i === 3 ? 0 : b),
  }));
  const s2 = new MemoryNodeStore();
  const r2 = buildFileTree(always, s2);
  const l2 = await nodesByLevel(r2.root, s2);
  assert.ok(l2[0].every((x) => (x as { chunks: unknown[] }).chunks.length === 2));
  assert.ok(l2.length <= Math.ceil(Math.log2(n)) + 1);
  const walked = await collect(walkFileChunks(r2.root, s2));
  assert.deepEqual(walked.map((c) => c.length), always.map((c) => c.length));
});

Deno.test("repeated chunks (a file of zeros) build a tiny tree and walk back in full", async () => {
  const n = 100_000;
  for (const byte3 of [0, 1]) {
    const h = new Uint8Array(32).fill(7);
    h[3] = byte3; // 0: every chunk is a boundary; 1: none is
    const store = new MemoryNodeStore();
    const r = buildFileTree({
      *[Symbol.iterator]() {
        for (let i = 0; i < n; i++) yield { hash: h, length: 65536 };
      },
    }, store);
    assert.equal(r.size, n * 65536);
    assert.ok(store.size < 64, `distinct nodes ${store.size}`);
    let count = 0;
    let offset = 0;
    for await (const c of walkFileChunks(r.root, store)) {
      assert.equal(c.offset, offset);
      offset += c.length;
      count++;
    }
    assert.equal(count, n);
  }
});

Deno.test("builder input validation", () => {
  const b = new FileTreeBuilder(new MemoryNodeStore());
  const h = new Uint8Array(32);
  assert.throws(() => b.add(new Uint8Array(31), 1), MerkleInputError);
  assert.throws(() => b.add("x" as unknown as Hash, 1), MerkleInputError);
  for (const bad of [0, -1, 1.5, NaN, Infinity, 2 ** 53]) {
    assert.throws(() => b.add(h, bad), MerkleInputError);
  }
  b.add(h, 2 ** 52);
  assert.throws(() => b.add(h, 2 ** 52), MerkleInputError); // total would pass 2^53-1
  b.finish();
  assert.throws(() => b.add(h, 1), MerkleInputError);
  assert.throws(() => b.finish(), MerkleInputError);
  assert.throws(() => new FileTreeBuilder({} as never), MerkleInputError);
});

/** Keeps every node a builder emits, by hex hash. */
class RecordingSink {
  nodes = new Map<string, Uint8Array>();
  put(hash: Hash, bytes: Uint8Array): void {
    this.nodes.set(toHex(hash), bytes);
  }
}

/** Valid nodes of all four types (and both empty roots), for the codec tests. */
function sampleNodes(): Uint8Array[] {
  const sink = new RecordingSink();
  buildFileTree(randomChunks(3000, 99), sink);
  const entries: DirEntry[] = Array.from({ length: 400 }, (_, i) => ({
    path: `dir${String(i).padStart(4, "0")}/ファイル-${i}.txt`,
    kind: "file",
    root: sha256(Uint8Array.of(i & 255, i >> 8)),
    size: i * 1000,
    mode: 0o644,
    mtime: 1_700_000_000_000 + i - 200,
  }));
  entries.push({
    path: "zz/link",
    kind: "symlink",
    root: EMPTY_FILE_ROOT,
    size: 9,
    mode: 0o777,
    mtime: -5,
    target: "../a/b/c/",
  });
  entries.push({
    path: "zz/sub",
    kind: "dir",
    root: EMPTY_FILE_ROOT,
    size: 0,
    mode: 0o755,
    mtime: 0,
  });
  buildDirTree(entries, sink);
  return [EMPTY_FILE_NODE, EMPTY_DIR_NODE, ...sink.nodes.values()];
}

function decodeOrError(bytes: Uint8Array): MerkleNode | MerkleDecodeError {
  try {
    return decodeNode(bytes);
  } catch (e) {
    if (e instanceof MerkleDecodeError) return e;
    throw new Error(`decoder threw ${e} on ${toHex(bytes.slice(0, 64))}`);
  }
}

/** Decoding either fails with MerkleDecodeError or succeeds on exactly canonical bytes. */
function assertStrict(bytes: Uint8Array): boolean {
  const r = decodeOrError(bytes);
  if (r instanceof MerkleDecodeError) return false;
  assert.deepEqual(encodeNode(r), bytes, "a decodable node must be canonical");
  return true;
}

Deno.test("codec: every node type round-trips byte for byte", () => {
  const nodes = sampleNodes();
  const types = new Set<string>();
  for (const bytes of nodes) {
    const node = decodeNode(bytes);
    types.add(node.type);
    assert.deepEqual(encodeNode(node), bytes);
    assert.equal(nodeKindOf(bytes), node.type.startsWith("file") ? "file" : "dir");
    assert.ok(bytes.length <= MAX_NODE_BYTES);
  }
  assert.deepEqual([...types].sort(), ["dir-inner", "dir-leaf", "file-inner", "file-leaf"]);
  assert.equal(NODE_KIND.file, FILE_NODE_KIND);
  assert.equal(NODE_KIND.dir, DIR_NODE_KIND);
});

Deno.test("codec: every truncation is rejected with MerkleDecodeError", () => {
  const byType = new Map<string, Uint8Array>();
  for (const b of sampleNodes()) byType.set(decodeNode(b).type + (b.length > 5 ? "" : "-empty"), b);
  for (const bytes of byType.values()) {
    for (let n = 0; n < bytes.length; n++) {
      assert.ok(decodeOrError(bytes.subarray(0, n)) instanceof MerkleDecodeError, `prefix ${n}`);
    }
  }
});

Deno.test("codec: mutated bytes and garbage never crash the decoder", () => {
  const next = rng(4242);
  const nodes = sampleNodes().filter((b) => b.length < 8000);
  let accepted = 0;
  for (let t = 0; t < 3000; t++) {
    const base = nodes[next() % nodes.length];
    let bytes = base.slice();
    const op = next() % 4;
    const at = next() % bytes.length;
    if (op === 0) bytes[at] ^= 1 << (next() % 8);
    else if (op === 1) bytes[at] = next() & 255;
    else if (op === 2) {
      bytes = Uint8Array.from([...bytes.subarray(0, at), next() & 255, ...bytes.subarray(at)]);
    } else bytes = Uint8Array.from([...bytes.subarray(0, at), ...bytes.subarray(at + 1)]);
    if (assertStrict(bytes)) accepted++;
  }
  for (let t = 0; t < 3000; t++) {
    const bytes = new Uint8Array(next() % 300);
    for (let i = 0; i < bytes.length; i++) bytes[i] = next() & 255;
    if (t % 2 === 0 && bytes.length >= 5) {
      bytes.set([1, 1 + (t % 4 === 0 ? 1 : 0), next() % 3, 0, next() % 4]);
    }
    assertStrict(bytes);
  }
  // Flipping bits of a hash or a length gives another valid node; most mutations must not.
  assert.ok(accepted > 0 && accepted < 3000);
});

Deno.test("codec: specific malformed nodes are rejected with a reason", () => {
  const h = new Uint8Array(32).fill(9);
  const leaf = (...entry: number[]) => Uint8Array.of(1, 1, 0, 0, 1, ...h, ...entry);
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(0), /truncated/],
    [Uint8Array.of(2, 1, 0, 0, 0), /unknown node format version 2/],
    [Uint8Array.of(1, 3, 0, 0, 0), /unknown node kind 3/],
    [Uint8Array.of(1, 1, 64, 0, 1), /level 64/],
    [Uint8Array.of(1, 1, 0, 4, 1), /1025 entries/],
    [Uint8Array.of(1, 1, 2, 0, 0), /empty inner node/],
    [leaf(0), /zero-length chunk/],
    [leaf(0x80, 0x00), /non-canonical varint/],
    [leaf(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01), /varint too long/],
    [leaf(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), /varint too large/],
    [leaf(5, 0), /1 trailing bytes/],
    [leaf(), /truncated/],
    [new Uint8Array(MAX_NODE_BYTES + 1), /exceeds/],
    // dir leaf: path "a/../b"
    [
      Uint8Array.of(1, 2, 0, 0, 1, 6, ...new TextEncoder().encode("a/../b"), 1, 0, 0),
      /'\.\.' segment/,
    ],
    // dir leaf: invalid UTF-8 path
    [Uint8Array.of(1, 2, 0, 0, 1, 2, 0xc3, 0x28, 1, 0, 0), /not valid UTF-8/],
    // dir leaf: unknown entry type 3
    [Uint8Array.of(1, 2, 0, 0, 1, 1, 0x61, 3, 0, 0), /unknown entry kind 3/],
    // dir leaf: "b" then "a"
    [Uint8Array.of(1, 2, 0, 0, 2, 1, 0x62, 1, 0, 0, 1, 0x61, 1, 0, 0), /not strictly sorted/],
    // dir leaf: mode 0o10000
    [Uint8Array.of(1, 2, 0, 0, 1, 1, 0x61, 1, 0x80, 0x80, 0x01, 0), /mode/],
  ];
  for (const [bytes, reason] of cases) {
    assert.throws(() => decodeNode(bytes), (e: unknown) => {
      assert.ok(e instanceof MerkleDecodeError, `${e}`);
      assert.match((e as Error).message, reason);
      return true;
    });
  }
  assert.throws(() => decodeNode("x" as unknown as Uint8Array), MerkleDecodeError);
  assert.throws(() => nodeKindOf(Uint8Array.of(1, 9, 0, 0, 0)), MerkleDecodeError);
});

Deno.test("encodeNode refuses what the format cannot hold", () => {
  const h = new Uint8Array(32);
  assert.throws(
    () => encodeNode({ type: "file-leaf", level: 0, chunks: [{ hash: h, length: 0 }], size: 0 }),
    MerkleInputError,
  );
  const many = Array.from({ length: MAX_ENTRIES + 1 }, () => ({ hash: h, length: 1 }));
  assert.throws(
    () => encodeNode({ type: "file-leaf", level: 0, chunks: many, size: 0 }),
    MerkleInputError,
  );
  assert.throws(
    () => encodeNode({ type: "file-inner", level: 0, children: [{ hash: h, size: 1 }], size: 1 }),
    MerkleInputError,
  );
  assert.throws(
    () => encodeNode({ type: "file-inner", level: 1, children: [], size: 0 }),
    MerkleInputError,
  );
});

Deno.test("fetchNode verifies: wrong bytes, missing node, non-node object, wrong kind", async () => {
  const store = new MemoryNodeStore();
  const r = buildFileTree(randomChunks(500, 5), store);
  const good = await store.getNode(r.root);
  const bad = good.slice();
  bad[bad.length - 1] ^= 1;
  const tampered = new MemoryNodeStore();
  tampered.put(r.root, bad);
  await assert.rejects(fetchNode(tampered, r.root), (e: unknown) => {
    assert.ok(e instanceof MerkleIntegrityError);
    assert.ok(e.message.includes(toHex(r.root)));
    assert.deepEqual(e.hash, r.root);
    return true;
  });
  const missing = sha256(Uint8Array.of(1, 2, 3));
  await assert.rejects(store.getNode(missing), MerkleMissingNodeError);
  await assert.rejects(fetchNode(store, missing), (e: unknown) => {
    assert.ok(e instanceof MerkleMissingNodeError);
    assert.ok(e.message.includes(toHex(missing)));
    return true;
  });
  // A chunk stored under its own (correct) hash is not a node.
  const chunk = new TextEncoder().encode("hello, not a node");
  store.put(sha256(chunk), chunk);
  await assert.rejects(fetchNode(store, sha256(chunk)), (e: unknown) => {
    assert.ok(e instanceof MerkleDecodeError);
    assert.ok(e.message.includes(toHex(sha256(chunk))));
    return true;
  });
  const dir = buildDirTree([{
    path: "a",
    kind: "dir",
    root: EMPTY_FILE_ROOT,
    size: 0,
    mode: 0,
    mtime: 0,
  }], store);
  await assert.rejects(fetchFileNode(store, dir.root), MerkleIntegrityError);
  await assert.rejects(fetchDirNode(store, r.root), MerkleIntegrityError);
  await assert.rejects(collect(walkFileChunks(dir.root, store)), MerkleIntegrityError);
  await assert.rejects(fetchNode(store, new Uint8Array(3)), TypeError);
});

Deno.test("walkFileChunks rejects a tree whose parent lies about a child", async () => {
  const store = new MemoryNodeStore();
  const chunks = randomChunks(2000, 77);
  const r = buildFileTree(chunks, store);
  const root = await fetchFileNode(store, r.root);
  if (root.type !== "file-inner" || root.level !== 1) throw new Error("expected a level-1 root");
  // Same children, one size off by one: a validly encoded node that contradicts its child.
  const liar = encodeNode({
    ...root,
    children: root.children.map((c, i) => i === 1 ? { ...c, size: c.size + 1 } : c),
  });
  store.put(sha256(liar), liar);
  await assert.rejects(collect(walkFileChunks(sha256(liar), store)), /parent says/);
  // A child from the wrong level.
  const wrongLevel = encodeNode({
    type: "file-inner",
    level: 2,
    children: [{ hash: root.children[0].hash, size: root.children[0].size }],
    size: 0,
  });
  store.put(sha256(wrongLevel), wrongLevel);
  await assert.rejects(
    collect(walkFileChunks(sha256(wrongLevel), store)),
    /level 0 under a level-2/,
  );
});
