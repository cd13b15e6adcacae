/**
 * The directory tree: UTF-8 path order, entry rules, build/walk/lookup round trips, sorted
 * input enforced, determinism, diffDirTrees equal to a brute-force comparison on random
 * add/remove/change sets, and the shape property: changing one entry rewrites exactly one node
 * per level, found with O(height) fetches.
 */
import assert from "node:assert/strict";
import { sha256, toHex } from "../../src/chunk/mod.ts";
import type { Hash } from "../../src/chunk/mod.ts";
import {
  buildDirTree,
  comparePaths,
  diffDirTrees,
  diffMissingNodes,
  type DirEntry,
  DirTreeBuilder,
  EMPTY_DIR_ROOT,
  EMPTY_FILE_ROOT,
  encodeNode,
  fetchDirNode,
  lookupDirEntry,
  MemoryNodeStore,
  MerkleInputError,
  pathProblem,
  walkDirTree,
} from "../../src/merkle/mod.ts";

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

// ASCII, '.', '-', Latin-1, CJK, a BMP character above the surrogates, and an astral one.
const ALPHABET = [
  "a",
  "b",
  "z",
  "A",
  "0",
  ".",
  "-",
  "_",
  " ",
  "é",
  "中",
  "\uff21",
  "\ue000",
  "😀",
  "𝄞",
];

function randomSegment(next: () => number): string {
  let s = "";
  const n = 1 + (next() % 6);
  for (let i = 0; i < n; i++) s += ALPHABET[next() % ALPHABET.length];
  return s === "." || s === ".." ? `x${s}` : s;
}

function randomPath(next: () => number): string {
  const depth = 1 + (next() % 3);
  return Array.from({ length: depth }, () => randomSegment(next)).join("/");
}

function randomEntry(path: string, next: () => number): DirEntry {
  const r = next() % 10;
  const mode = next() % 0o1000;
  const mtime = 1_600_000_000_000 + (next() % 1_000_000_000) - (r === 9 ? 2_000_000_000_000 : 0);
  if (r < 7) {
    const size = next() % 1_000_000;
    return {
      path,
      kind: "file",
      root: size ? sha256(Uint8Array.of(next() & 255, next() & 255)) : EMPTY_FILE_ROOT,
      size,
      mode,
      mtime,
    };
  }
  if (r < 8) return { path, kind: "dir", root: EMPTY_FILE_ROOT, size: 0, mode, mtime };
  const target = randomPath(next);
  return {
    path,
    kind: "symlink",
    root: EMPTY_FILE_ROOT,
    size: new TextEncoder().encode(target).length,
    mode: 0o777,
    mtime,
    target,
  };
}

function randomEntries(n: number, next: () => number): DirEntry[] {
  const byPath = new Map<string, DirEntry>();
  for (let i = 0; byPath.size < n && i < 10 * n + 10; i++) {
    const p = randomPath(next);
    byPath.set(p, randomEntry(p, next));
  }
  return [...byPath.values()].sort((a, b) => comparePaths(a.path, b.path));
}

function byteCompare(a: string, b: string): number {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

function sameEntry(a: DirEntry, b: DirEntry): boolean {
  return a.kind === b.kind && toHex(a.root) === toHex(b.root) && a.size === b.size &&
    a.mode === b.mode && a.mtime === b.mtime && a.target === b.target;
}

function bruteDiff(a: DirEntry[], b: DirEntry[]) {
  const before = new Map(a.map((e) => [e.path, e]));
  const after = new Map(b.map((e) => [e.path, e]));
  const sort = (xs: string[]) => xs.sort(byteCompare);
  return {
    added: sort(b.filter((e) => !before.has(e.path)).map((e) => e.path)),
    removed: sort(a.filter((e) => !after.has(e.path)).map((e) => e.path)),
    changed: sort(
      b.filter((e) => before.has(e.path) && !sameEntry(before.get(e.path) as DirEntry, e)).map((
        e,
      ) => e.path),
    ),
  };
}

function storeKeys(s: MemoryNodeStore): Set<string> {
  return new Set([...s.hashes()].map(toHex));
}

Deno.test("comparePaths orders by UTF-8 bytes", () => {
  const next = rng(1);
  const paths = Array.from({ length: 2000 }, () => randomPath(next));
  for (let i = 0; i + 1 < paths.length; i++) {
    assert.equal(
      Math.sign(comparePaths(paths[i], paths[i + 1])),
      Math.sign(byteCompare(paths[i], paths[i + 1])),
    );
  }
  const sorted = paths.slice().sort(comparePaths);
  assert.deepEqual(sorted, paths.slice().sort(byteCompare));
  assert.equal(comparePaths("a", "a"), 0);
  assert.ok(comparePaths("a.txt", "a/b") < 0); // '.' 0x2e < '/' 0x2f
  assert.ok(comparePaths("\uffff", "😀") < 0); // UTF-16 order would say the opposite
  assert.ok(comparePaths("a", "ab") < 0);
});

Deno.test("pathProblem accepts relative clean paths only", () => {
  for (const ok of ["a", "a/b", "a b/c.d", ".hidden/x", "..x/y", "é/中/😀"]) {
    assert.equal(pathProblem(ok), null, ok);
  }
  for (
    const bad of [
      "",
      "/a",
      "a/",
      "a//b",
      ".",
      "a/./b",
      "../a",
      "a/..",
      "a\0b",
      "\ud800",
      "x".repeat(4097),
    ]
  ) {
    assert.notEqual(pathProblem(bad), null, JSON.stringify(bad));
  }
  assert.equal(pathProblem("é".repeat(2048)), null); // 4096 bytes
  assert.notEqual(pathProblem("é".repeat(2048) + "a"), null);
});

Deno.test("build, walk and look up round-trip; the same set gives the same root", async () => {
  for (const n of [0, 1, 2, 100, 3000]) {
    const next = rng(100 + n);
    const entries = randomEntries(n, next);
    const store = new MemoryNodeStore();
    const r = buildDirTree(entries, store);
    assert.equal(r.count, entries.length);
    if (n === 0) assert.deepEqual(r.root, EMPTY_DIR_ROOT);
    assert.deepEqual(await collect(walkDirTree(r.root, store)), entries);
    // Deterministic, and equal to the streaming builder.
    assert.deepEqual(
      buildDirTree(entries.map((e) => ({ ...e })), new MemoryNodeStore()).root,
      r.root,
    );
    const builder = new DirTreeBuilder(new MemoryNodeStore());
    for (const e of entries) builder.add(e);
    assert.deepEqual(builder.finish().root, r.root);
    for (const e of entries.slice(0, 50)) {
      assert.deepEqual(await lookupDirEntry(r.root, e.path, store), e);
    }
    for (let i = 0; i < 50; i++) {
      const p = randomPath(next);
      const found = await lookupDirEntry(r.root, p, store);
      assert.deepEqual(found, entries.find((e) => e.path === p) ?? null);
    }
    if (n >= 100) assert.equal((await fetchDirNode(store, r.root)).count, entries.length);
  }
});

Deno.test("golden root of a fixed directory", () => {
  const entries: DirEntry[] = [
    {
      path: "README.md",
      kind: "file",
      root: sha256(Uint8Array.of(1)),
      size: 10,
      mode: 0o644,
      mtime: 1_700_000_000_000,
    },
    {
      path: "bin",
      kind: "dir",
      root: EMPTY_FILE_ROOT,
      size: 0,
      mode: 0o755,
      mtime: 1_700_000_000_001,
    },
    {
      path: "bin/run",
      kind: "symlink",
      root: EMPTY_FILE_ROOT,
      size: 6,
      mode: 0o777,
      mtime: -1,
      target: "../run",
    },
    { path: "é", kind: "file", root: EMPTY_FILE_ROOT, size: 0, mode: 0o600, mtime: 0 },
  ];
  const r = buildDirTree(entries, new MemoryNodeStore());
  assert.equal(toHex(r.root), "5131eea4b8ff6216d913651a4269a0d9b0eb332600b3a2b36bac24af47acf055");
  assert.equal(
    toHex(EMPTY_DIR_ROOT),
    "b0b8ad02f2f05ebcc80d37e5324dbf0d88cfd6cb808676f6d7dc5d0b6d3286fa",
  );
});

Deno.test("unsorted, duplicate and invalid entries are rejected", () => {
  const f = (path: string): DirEntry => ({
    path,
    kind: "file",
    root: EMPTY_FILE_ROOT,
    size: 0,
    mode: 0o644,
    mtime: 0,
  });
  const sink = new MemoryNodeStore();
  assert.throws(() => buildDirTree([f("b"), f("a")], sink), MerkleInputError);
  assert.throws(() => buildDirTree([f("a"), f("a")], sink), /strictly sorted/);
  assert.throws(() => buildDirTree([f("\uffff"), f("😀/x"), f("a")], sink), MerkleInputError);
  const bad: DirEntry[] = [
    f("/abs"),
    f("a/../b"),
    { ...f("x"), mode: 0o10000 },
    { ...f("x"), mode: -1 },
    { ...f("x"), mtime: 1.5 },
    { ...f("x"), mtime: 2 ** 53 },
    { ...f("x"), size: -1 },
    { ...f("x"), root: new Uint8Array(31) },
    { ...f("x"), target: "y" },
    { ...f("x"), kind: "dir", size: 1 },
    { ...f("x"), kind: "dir", root: sha256(Uint8Array.of(1)) },
    { ...f("x"), kind: "symlink", size: 0 },
    { ...f("x"), kind: "symlink", target: "abc", size: 2 },
    { ...f("x"), kind: "symlink", target: "", size: 0 },
    { ...f("x"), kind: "fifo" as never },
  ];
  for (const e of bad) {
    assert.throws(() => buildDirTree([e], sink), MerkleInputError, JSON.stringify(e));
  }
  // A rejected entry leaves the builder usable for the next, sorted one.
  const b = new DirTreeBuilder(sink);
  b.add(f("m"));
  assert.throws(() => b.add(f("a")), MerkleInputError);
  b.add(f("n"));
  assert.equal(b.finish().count, 2);
});

Deno.test("diffDirTrees equals a brute-force comparison on random add/remove/change sets", async () => {
  for (let trial = 0; trial < 60; trial++) {
    const next = rng(5000 + trial);
    const a = randomEntries([0, 1, 5, 64, 500, 3000][trial % 6], next);
    const map = new Map(a.map((e) => [e.path, e]));
    const edits = next() % 4 === 0 ? 1 + (next() % 500) : 1 + (next() % 6);
    for (let i = 0; i < edits; i++) {
      const r = next() % 3;
      const keys = [...map.keys()];
      if (r === 0 || keys.length === 0) {
        const p = randomPath(next);
        map.set(p, randomEntry(p, next));
      } else if (r === 1) {
        map.delete(keys[next() % keys.length]);
      } else {
        const old = map.get(keys[next() % keys.length]) as DirEntry;
        const e = next() % 2 ? { ...old, mtime: old.mtime + 1 } : randomEntry(old.path, next);
        map.set(old.path, e);
      }
    }
    const b = [...map.values()].sort((x, y) => comparePaths(x.path, y.path));
    const store = new MemoryNodeStore();
    const ra = buildDirTree(a, store);
    const rb = buildDirTree(b, store);
    const ctx = `trial ${trial}`;
    assert.deepEqual(await diffDirTrees(ra.root, rb.root, store), bruteDiff(a, b), ctx);
    assert.deepEqual(await diffDirTrees(rb.root, ra.root, store), bruteDiff(b, a), ctx);
    assert.deepEqual(await diffDirTrees(EMPTY_DIR_ROOT, rb.root, store), bruteDiff([], b), ctx);
    assert.deepEqual(await diffDirTrees(ra.root, ra.root, store), {
      added: [],
      removed: [],
      changed: [],
    });
  }
});

Deno.test("one changed entry in 50,000 rewrites one node per level, found in O(height) fetches", async () => {
  const n = 50_000;
  const entries: DirEntry[] = Array.from({ length: n }, (_, i) => ({
    path: `photos/${String(i).padStart(6, "0")}.jpg`,
    kind: "file",
    root: sha256(Uint8Array.of(i & 255, (i >> 8) & 255, i >> 16)),
    size: 1000 + i,
    mode: 0o644,
    mtime: 1_700_000_000_000 + i,
  }));
  const sa = new MemoryNodeStore();
  const ra = buildDirTree(entries, sa);
  const levels = (await fetchDirNode(sa, ra.root)).level + 1;
  const at = 12_345;
  const edited = entries.slice();
  edited[at] = { ...entries[at], size: 7, root: sha256(Uint8Array.of(7)) };
  const sb = new MemoryNodeStore();
  const rb = buildDirTree(edited, sb);
  const before = storeKeys(sa);
  const changed = [...storeKeys(sb)].filter((h) => !before.has(h));
  assert.equal(changed.length, levels);
  sa.resetCounters();
  sb.resetCounters();
  const d = await diffDirTrees(ra.root, rb.root, sa, sb);
  assert.deepEqual(d, { added: [], removed: [], changed: [entries[at].path] });
  assert.ok(sa.fetches + sb.fetches <= 2 * levels, `${sa.fetches + sb.fetches} fetches`);
  assert.equal((await diffMissingNodes(ra.root, rb.root, sa, sb)).length, levels);

  // Inserting a path touches O(height) nodes too.
  const inserted = entries.slice();
  inserted.splice(30_001, 0, { ...entries[30_000], path: "photos/030000a.jpg" });
  const sc = new MemoryNodeStore();
  const rc = buildDirTree(inserted, sc);
  const changedC = [...storeKeys(sc)].filter((h) => !before.has(h));
  assert.ok(changedC.length <= 3 * levels, `${changedC.length} nodes changed`);
  assert.deepEqual(await diffDirTrees(ra.root, rc.root, sa, sc), {
    added: ["photos/030000a.jpg"],
    removed: [],
    changed: [],
  });
});

Deno.test("a dir tree's walk notices a lying parent", async () => {
  const next = rng(77);
  const entries = randomEntries(2000, next);
  const store = new MemoryNodeStore();
  const r = buildDirTree(entries, store);
  const root = await fetchDirNode(store, r.root);
  if (root.type !== "dir-inner") throw new Error("expected an inner root");
  const liar = encodeNode({
    ...root,
    children: root.children.map((c, i) => i === 0 ? { ...c, count: c.count + 1 } : c),
  });
  const h: Hash = sha256(liar);
  store.put(h, liar);
  await assert.rejects(collect(walkDirTree(h, store)), /parent says/);
});
