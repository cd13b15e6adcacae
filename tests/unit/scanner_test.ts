/**
 * The scanner: a rescan of an unchanged tree reads no file content; changes, removals, ignore
 * rules, symlinks and the "file changed while read" case behave as documented; the directory
 * root depends only on the tree.
 */
import assert from "node:assert/strict";
import { sha256, toHex } from "../../src/chunk/mod.ts";
import { walkDirTree, walkFileChunks } from "../../src/merkle/mod.ts";
import { LocalStore, StaleLocationError } from "../../src/store/mod.ts";
import { hashFile, HashFileError, scanPaths, scanTree, walkPaths } from "../../src/sync/mod.ts";
import { seededBytes } from "../helpers/bytes.ts";

const bytesOf = seededBytes;

async function tempTree(files: Record<string, Uint8Array | string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "filesync-scan-" });
  for (const [path, content] of Object.entries(files)) {
    const abs = `${dir}/${path}`;
    await Deno.mkdir(abs.slice(0, abs.lastIndexOf("/")), { recursive: true });
    if (typeof content === "string") await Deno.writeTextFile(abs, content);
    else await Deno.writeFile(abs, content);
  }
  return dir;
}

async function scanOnce(dir: string, workers = 2) {
  const store = await LocalStore.open(dir);
  try {
    return await scanTree(store, { workers });
  } finally {
    await store.close();
  }
}

/** The tree of `dir` copied into `other` without its index, and scanned there from scratch. */
async function scanFreshCopy(dir: string, other: string) {
  await new Deno.Command("cp", { args: ["-a", `${dir}/.`, other] }).output();
  await Deno.remove(`${other}/.filesync`, { recursive: true });
  return await scanOnce(other, 0);
}

/** Every file record of a store as "path kind size root" (inodes and mtimes left out). */
async function recordShapes(store: LocalStore): Promise<string[]> {
  return [...(await store.files.loadAll())].map(([p, rec]) =>
    `${p} ${rec.kind} ${rec.size} ${toHex(rec.root)}`
  );
}

async function indexedPaths(dir: string): Promise<string[]> {
  const store = await LocalStore.open(dir);
  try {
    const summary = await store.files.lastScan();
    const out: string[] = [];
    for await (const e of walkDirTree(summary!.root, store.packs)) out.push(e.path);
    return out;
  } finally {
    await store.close();
  }
}

Deno.test("scan: a second scan of an unchanged tree reads no file content", async () => {
  const files: Record<string, Uint8Array> = {};
  for (let i = 0; i < 40; i++) files[`d${i % 4}/f${i}.bin`] = bytesOf(i + 1, 1000 + i * 3000);
  files["big.bin"] = bytesOf(99, 3_000_000);
  const dir = await tempTree(files);
  try {
    const first = await scanOnce(dir);
    assert.equal(first.files, 41);
    assert.equal(first.hashedFiles, 41);
    assert.equal(first.problems.length, 0);
    const second = await scanOnce(dir);
    assert.equal(second.hashedFiles, 0);
    assert.equal(second.hashedBytes, 0);
    assert.equal(toHex(second.root), toHex(first.root));
    assert.equal(second.bytes, first.bytes);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan: only changed files are re-read; removals and stale locations are handled", async () => {
  const dir = await tempTree({
    "a.bin": bytesOf(1, 200_000),
    "b.bin": bytesOf(2, 200_000),
    "c.txt": "gone soon",
  });
  try {
    const first = await scanOnce(dir);
    const oldChunks: Uint8Array[] = [];
    {
      const store = await LocalStore.open(dir);
      const rec = await store.files.get("a.bin");
      for await (const c of walkFileChunks(rec!.root, store.packs)) oldChunks.push(c.hash);
      await store.close();
    }
    const edited = bytesOf(1, 200_000);
    edited[150_000] ^= 0xff;
    await Deno.writeFile(`${dir}/a.bin`, edited);
    await Deno.remove(`${dir}/c.txt`);
    const second = await scanOnce(dir);
    assert.equal(second.hashedFiles, 1);
    assert.equal(second.removed, 1);
    assert.equal(second.files, 2);
    assert.notEqual(toHex(second.root), toHex(first.root));
    assert.deepEqual(await indexedPaths(dir), ["a.bin", "b.bin"]);

    const store = await LocalStore.open(dir);
    try {
      // Every current chunk of a.bin is served, verified, from the file itself.
      const rec = await store.files.get("a.bin");
      let offset = 0;
      for await (const c of walkFileChunks(rec!.root, store.packs)) {
        const bytes = await store.locator.read(c.hash);
        assert.deepEqual(bytes, edited.subarray(offset, offset + c.length));
        offset += c.length;
      }
      assert.equal(offset, edited.length);
      // The chunk that changed is no longer located anywhere.
      const newHashes = new Set<string>();
      for await (const c of walkFileChunks(rec!.root, store.packs)) newHashes.add(toHex(c.hash));
      const dropped = oldChunks.filter((h) => !newHashes.has(toHex(h)));
      assert.ok(dropped.length >= 1);
      for (const h of dropped) assert.equal(await store.locator.lookup(h), null);
      // A change behind the scanner's back is caught on read, not served.
      const [firstChunk] = [...newHashes];
      await Deno.writeFile(`${dir}/a.bin`, bytesOf(5, 200_000));
      await assert.rejects(
        store.locator.read(Uint8Array.from(firstChunk.match(/../g)!.map((h) => parseInt(h, 16)))),
        StaleLocationError,
      );
    } finally {
      await store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan: ignore files (nested, negated), .filesync/ and symlinks are not followed", async () => {
  const outside = await tempTree({ "secret.txt": "outside the synced tree" });
  const dir = await tempTree({
    ".filesyncignore": "*.log\nbuild/\n",
    "keep.txt": "k",
    "x.log": "ignored",
    "build/out.o": "ignored dir",
    "sub/.filesyncignore": "!important.log\n*.tmp\n",
    "sub/important.log": "re-included by the deeper file",
    "sub/other.log": "still ignored",
    "sub/t.tmp": "ignored by the deeper file",
    "top.tmp": "not ignored at the top",
  });
  try {
    await Deno.symlink(outside, `${dir}/link-out`);
    await Deno.symlink("keep.txt", `${dir}/link-in`);
    const r = await scanOnce(dir);
    assert.equal(r.problems.length, 0);
    assert.deepEqual(await indexedPaths(dir), [
      ".filesyncignore",
      "keep.txt",
      "link-in",
      "link-out",
      "sub",
      "sub/.filesyncignore",
      "sub/important.log",
      "top.tmp",
    ]);
    assert.equal(r.symlinks, 2);
    const store = await LocalStore.open(dir);
    try {
      const link = await store.files.get("link-out");
      assert.equal(link?.kind, "symlink");
      assert.equal(link?.target, outside);
      assert.equal(await store.files.get("link-out/secret.txt"), null);
    } finally {
      await store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("scan: the root depends on content and paths, not on the scan's history", async () => {
  const files = { "x/1": bytesOf(1, 70_000), "x/2": "two", "y": bytesOf(3, 10) };
  const a = await tempTree(files);
  const b = await tempTree(files);
  try {
    // Same mtimes on both sides: the root covers mtime and mode too.
    for (const p of Object.keys(files)) {
      await Deno.utime(`${a}/${p}`, 1_700_000_000, 1_700_000_000);
      await Deno.utime(`${b}/${p}`, 1_700_000_000, 1_700_000_000);
    }
    for (const d of ["x"]) {
      await Deno.utime(`${a}/${d}`, 1_700_000_000, 1_700_000_000);
      await Deno.utime(`${b}/${d}`, 1_700_000_000, 1_700_000_000);
    }
    const ra = await scanOnce(a, 1);
    const rb = await scanOnce(b, 2);
    assert.equal(toHex(ra.root), toHex(rb.root));
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});

Deno.test("hashFile: a file changing while it is read is reported, never mis-hashed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "filesync-race-" });
  const path = `${dir}/growing.bin`;
  try {
    const base = bytesOf(42, 48 * 1024 * 1024);
    let detected = 0;
    for (let trial = 0; trial < 4; trial++) {
      await Deno.writeFile(path, base);
      const hashing = hashFile(path).then((r) => r, (e) => e);
      // Append while the read is under way.
      await new Promise((r) => setTimeout(r, 5));
      const f = await Deno.open(path, { append: true });
      await f.write(new Uint8Array([1, 2, 3]));
      f.close();
      const result = await hashing;
      if (result instanceof HashFileError) {
        assert.equal(result.code, "changed");
        assert.match(result.message, /changed while it was read/);
        detected++;
      } else {
        // If the read finished first, the result must describe the bytes it read.
        assert.ok(!(result instanceof Error), String(result));
        assert.equal(result.size, base.length);
      }
    }
    assert.ok(detected >= 1, "the concurrent append was never detected");
    await assert.rejects(hashFile(`${dir}/missing`), HashFileError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hashFile: the root equals the file tree over the chunk list", async () => {
  const dir = await tempTree({ "f": bytesOf(8, 500_000), "empty": new Uint8Array() });
  try {
    const r = await hashFile(`${dir}/f`);
    assert.equal(r.size, 500_000);
    assert.equal(r.chunks.reduce((n, c) => n + c.length, 0), 500_000);
    const empty = await hashFile(`${dir}/empty`);
    assert.equal(empty.chunks.length, 0);
    assert.equal(toHex(sha256(new Uint8Array())).length, 64);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan: after an overwrite, an insert and a truncation the tree is right and every chunk is located", async () => {
  const original = bytesOf(31, 3_000_000);
  const dir = await tempTree({ "f.bin": original, "other.bin": original.subarray(0, 500_000) });
  const store = await LocalStore.open(dir);
  try {
    await scanTree(store, { workers: 0 });
    const roots = [(await store.files.get("f.bin"))!.root];
    const edits: ((b: Uint8Array) => Uint8Array)[] = [
      (b) => {
        const c = b.slice();
        c.fill(7, 1_500_000, 1_504_096);
        return c;
      },
      (b) => {
        const c = new Uint8Array(b.length + 1);
        c.set(b.subarray(0, 1_000_000));
        c[1_000_000] = 0x42;
        c.set(b.subarray(1_000_000), 1_000_001);
        return c;
      },
      (b) => b.slice(0, 2_000_000),
    ];
    let content = original;
    for (const edit of edits) {
      const before = await store.files.get("f.bin");
      content = edit(content);
      await Deno.writeFile(`${dir}/f.bin`, content);
      await Deno.utime(`${dir}/f.bin`, new Date(), new Date(before!.mtime + 1000));
      // Inline and in a worker: both re-chunk guided by the previous version's chunks.
      await scanTree(store, { workers: edits.indexOf(edit) % 2 });
      const rec = (await store.files.get("f.bin"))!;
      // Guided or not, the tree is the one a fresh chunking gives.
      assert.equal(toHex(rec.root), toHex((await hashFile(`${dir}/f.bin`)).root));
      const inTree = new Set<string>();
      for await (const c of walkFileChunks(rec.root, store.packs)) {
        inTree.add(toHex(c.hash));
        // Each chunk reads back verified, wherever the locator places it.
        const bytes = await store.locator.read(c.hash);
        assert.ok(bytes !== null, `chunk at ${c.offset} is not located`);
        assert.equal(toHex(sha256(bytes)), toHex(c.hash));
      }
      // No chunk of an earlier version is located in f.bin unless f.bin still holds it.
      for (const root of roots) {
        for await (const c of walkFileChunks(root, store.packs)) {
          const loc = await store.locator.lookup(c.hash);
          if (loc?.path === "f.bin") assert.ok(inTree.has(toHex(c.hash)), "stale location");
        }
      }
      roots.push(rec.root);
    }
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** The tree both partial-scan comparisons start from. */
const PARTIAL_SCAN_TREE = {
  "a/one.txt": "one",
  "a/two.txt": "two",
  "b/deep/three.txt": "three",
  "c.txt": "c",
};

/** Their shared changes: an edit, a new directory with a file, a removed directory. */
async function editPartialScanTree(dir: string): Promise<void> {
  await Deno.writeTextFile(`${dir}/a/one.txt`, "one, edited");
  await Deno.mkdir(`${dir}/e/f`, { recursive: true });
  await Deno.writeTextFile(`${dir}/e/f/new.txt`, "new");
  await Deno.remove(`${dir}/b`, { recursive: true });
}

Deno.test("scan: a partial scan of reported paths gives the full scan's records, reading only them", async () => {
  const dir = await tempTree({
    ...PARTIAL_SCAN_TREE,
    ".filesyncignore": "*.log\n",
    "d/.filesyncignore": "secret/\n",
  });
  const other = await Deno.makeTempDir({ prefix: "filesync-scan-full-" });
  const store = await LocalStore.open(dir);
  try {
    await scanTree(store, { workers: 0 });
    const before = await store.files.lastScan();
    // Changes: the shared ones, an ignored file, a file under an ignored directory, and a path
    // reported twice (as itself and its parent).
    await editPartialScanTree(dir);
    await Deno.writeTextFile(`${dir}/x.log`, "ignored");
    await Deno.mkdir(`${dir}/d/secret`, { recursive: true });
    await Deno.writeTextFile(`${dir}/d/secret/k.txt`, "ignored too");
    const r = await scanTree(store, {
      workers: 0,
      paths: [
        "a/one.txt",
        "e",
        "e/f/new.txt",
        "b",
        "b/deep/three.txt",
        "x.log",
        "d/secret",
        "d/secret/k.txt",
      ],
    });
    assert.equal(r.hashedFiles, 2, "only the edited and the new file are read");
    assert.equal(r.removed, 3, "b, b/deep and b/deep/three.txt");
    // The same tree scanned from scratch elsewhere has the same root and the same records.
    const full = await scanFreshCopy(dir, other);
    assert.equal(toHex(r.root), toHex(full.root));
    assert.deepEqual(await indexedPaths(dir), await indexedPaths(other));
    // A partial scan keeps the last full scan's start (the racy-file rule counts from it).
    assert.equal((await store.files.lastScan())!.start, before!.start);
    // An ignore file among the paths makes it a full scan.
    await Deno.writeTextFile(`${dir}/.filesyncignore`, "*.log\nc.txt\n");
    await scanTree(store, { workers: 0, paths: [".filesyncignore"] });
    assert.ok(!(await indexedPaths(dir)).includes("c.txt"));
    assert.ok((await store.files.lastScan())!.start > before!.start, "a full scan's start");
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(other, { recursive: true });
  }
});

Deno.test("walkPaths: each entry once, whatever the order of the paths; missing ones yield nothing", async () => {
  const dir = await tempTree({ "a/sub/x": "x", "a/y": "y", "a.txt": "t", "a-b/z": "z" });
  try {
    const problems: { path: string; message: string }[] = [];
    const seen: string[] = [];
    const reported = ["a/sub/x", "a-b/z", "a.txt", "a", "gone/file", "a/sub", "a-b"];
    for await (const e of walkPaths(dir, reported, problems)) seen.push(e.path);
    assert.deepEqual(problems, []);
    assert.deepEqual(seen.slice().sort(), [...new Set(seen)].sort(), `twice: ${seen}`);
    assert.deepEqual(
      seen.slice().sort(),
      ["a", "a-b", "a-b/z", "a.txt", "a/sub", "a/sub/x", "a/y"],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan: when the index cannot be written the scan fails with the error, nothing crashes", async () => {
  const files: Record<string, Uint8Array> = {};
  for (let i = 0; i < 700; i++) files[`d${i % 7}/f${i}.bin`] = bytesOf(2 * i + 1, 200);
  const dir = await tempTree(files);
  const store = await LocalStore.open(dir);
  try {
    // The pack directory becomes unusable: the first KV commit (after its pack flush) fails
    // mid-scan, and every later write of the scan with it.
    const packs = `${dir}/.filesync/packs`;
    await Deno.remove(packs, { recursive: true });
    await Deno.writeTextFile(packs, "not a directory");
    await assert.rejects(scanTree(store, { workers: 2 }), /Not a directory/);
  } finally {
    await store.close().catch(() => {}); // its pending objects cannot be written either
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scanPaths: the reported paths' records as a full scan makes them, summary untouched", async () => {
  const dir = await tempTree(PARTIAL_SCAN_TREE);
  const other = await Deno.makeTempDir({ prefix: "filesync-scan-full-" });
  const store = await LocalStore.open(dir);
  try {
    await scanTree(store, { workers: 0 });
    const before = await store.files.lastScan();
    await editPartialScanTree(dir);
    const r = await scanPaths(store, ["a/one.txt", "e", "b"], { workers: 0 });
    assert.equal(r.hashedFiles, 2, "the edited and the new file");
    assert.equal(r.removed, 3, "b, b/deep and b/deep/three.txt");
    assert.deepEqual(await store.files.lastScan(), before, "no summary written");
    // Every record equals what a full scan of the same tree makes.
    await scanFreshCopy(dir, other);
    const fresh = await LocalStore.open(other);
    try {
      assert.deepEqual(await recordShapes(store), await recordShapes(fresh));
    } finally {
      await fresh.close();
    }
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(other, { recursive: true });
  }
});

Deno.test("scanPaths: a file turned into a directory, only its new child reported, drops the file's chunk locations", async () => {
  const content = bytesOf(41, 10_000); // under the minimum chunk size: one chunk
  const dir = await tempTree({ "ab": content, "other.txt": "x" });
  const store = await LocalStore.open(dir);
  try {
    await scanTree(store, { workers: 0 });
    const hash = sha256(content);
    assert.equal((await store.locator.lookup(hash))?.path, "ab");
    await Deno.remove(`${dir}/ab`);
    await Deno.mkdir(`${dir}/ab`);
    await Deno.writeTextFile(`${dir}/ab/c`, "child");
    await scanPaths(store, ["ab/c"], { workers: 0 });
    assert.equal((await store.files.get("ab"))?.kind, "dir");
    assert.equal((await store.files.get("ab/c"))?.kind, "file");
    assert.equal(await store.locator.lookup(hash), null, "no location left in the old file");
    assert.equal((await store.files.get("other.txt"))?.kind, "file", "other records stay");
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan: huge files hashed in the background are recorded as a plain scan records them", async () => {
  const files = {
    "big/huge.bin": bytesOf(7, 3 << 20),
    "big/other.bin": bytesOf(8, 2 << 20),
    "a.txt": "small one",
    "d/b.txt": "small two",
  };
  const dir = await tempTree(files);
  const plain = await tempTree(files);
  const store = await LocalStore.open(dir);
  try {
    const scan = await scanTree(store, { workers: 2, backgroundBytes: 2 << 20 });
    // Both files of 2 MiB and more are left to the background; the small ones are recorded.
    assert.deepEqual(scan.background?.files.map((f) => f.path).sort(), [
      "big/huge.bin",
      "big/other.bin",
    ]);
    assert.deepEqual(scan.background?.files.map((f) => f.size).sort(), [2 << 20, 3 << 20]);
    assert.ok(await store.files.get("a.txt"));
    assert.ok(await store.files.get("d/b.txt"));
    const done = await scan.background!.done;
    assert.equal(done.hashedFiles, 2);
    assert.equal(done.hashedBytes, 5 << 20);
    assert.deepEqual(done.problems, []);
    // Recorded as a scan of the same tree without a background part records them.
    const plainStore = await LocalStore.open(plain);
    try {
      const again = await scanTree(plainStore, { workers: 2 });
      assert.equal(again.background, null);
      assert.deepEqual(await recordShapes(store), await recordShapes(plainStore));
      // Every chunk of the huge file is located in it.
      const rec = (await store.files.get("big/huge.bin"))!;
      for await (const c of walkFileChunks(rec.root, store.packs)) {
        assert.ok(await store.holds(c.hash), `chunk at ${c.offset}`);
      }
    } finally {
      await plainStore.close();
    }
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(plain, { recursive: true });
  }
});

Deno.test("scan: nothing goes to the background alone, on the main thread, or in a plain scan", async () => {
  const dir = await tempTree({ "huge.bin": bytesOf(9, 3 << 20), "x.txt": "x" });
  const store = await LocalStore.open(dir);
  try {
    // Hashed on the calling thread: a huge file there would hold up the node anyway.
    let scan = await scanTree(store, { workers: 0, backgroundBytes: 1 << 20 });
    assert.equal(scan.background, null);
    assert.ok(await store.files.get("huge.bin"));
    // The huge file changed, and it is all there is to hash: nothing to gain from waiting.
    await Deno.writeFile(`${dir}/huge.bin`, bytesOf(10, 3 << 20));
    scan = await scanTree(store, { workers: 2, backgroundBytes: 1 << 20 });
    assert.equal(scan.background, null);
    assert.equal(scan.hashedFiles, 1);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan: a changed huge file is hashed in the background, its record kept meanwhile", async () => {
  const dir = await tempTree({ "huge.bin": bytesOf(11, 3 << 20), "x.txt": "x" });
  const store = await LocalStore.open(dir);
  try {
    await scanTree(store, { workers: 0 });
    const before = (await store.files.get("huge.bin"))!;
    await Deno.writeFile(`${dir}/huge.bin`, bytesOf(12, 3 << 20));
    await Deno.writeTextFile(`${dir}/x.txt`, "x2");
    const scan = await scanPaths(store, ["huge.bin", "x.txt"], {
      workers: 2,
      backgroundBytes: 1 << 20,
    });
    assert.deepEqual(scan.background?.files.map((f) => f.path), ["huge.bin"]);
    // Kept, not taken for removed; the scan itself hashed only the small file.
    assert.equal(scan.removed, 0);
    assert.equal(scan.hashedFiles, 1);
    assert.equal((await scan.background!.done).hashedFiles, 1);
    const after = (await store.files.get("huge.bin"))!;
    assert.notDeepEqual(after.root, before.root);
    const fresh = await hashFile(`${dir}/huge.bin`);
    assert.deepEqual(after.root, fresh.root);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
