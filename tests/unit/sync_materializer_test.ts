/**
 * The materializer: files (new, overwritten, empty, metadata only), directories, symlinks and
 * deletions reach the disk as committed; local records are updated so a rescan reads nothing;
 * chunks come from the tree, the pack store and the remote, in that order; local edits are
 * never overwritten; nothing is written through a symlinked ancestor; corrupt remote bytes are
 * refused; and the target always holds either the old or the new content.
 */
import assert from "node:assert/strict";
import { type Hash, sha256, toHex } from "../../src/chunk/mod.ts";
import { type IndexRecord, PathError } from "../../src/fsm/mod.ts";
import { EMPTY_FILE_ROOT, walkFileChunks } from "../../src/merkle/mod.ts";
import { KvBatch, SchemaError } from "../../src/store/mod.ts";
import {
  ChunkFetchError,
  isTempName,
  keepConflictCopy,
  materialize,
  type MaterializeSources,
  parseSyncedRecord,
  prefetchObjects,
  reconcile,
  type RemoteObjects,
  scanTree,
  sweepTempFiles,
  syncedFromIndex,
  SyncedState,
  UnsafePathError,
  WriteGroup,
} from "../../src/sync/mod.ts";
import type { ExpectedEntry } from "../../src/sync/mod.ts";
import { seededBytes } from "../helpers/bytes.ts";
import { PAST, withNode } from "../helpers/fake_remote.ts";

/** Seeds 0 and 1 differ here (seededBytes alone maps both to the same stream). */
const bytesOf = (seed: number, n: number) => seededBytes(seed * 2 + 1, n);

function dirRecord(path: string, version: number, mode = 0o755): IndexRecord {
  return {
    path,
    version,
    kind: "dir",
    root: EMPTY_FILE_ROOT,
    size: 0,
    mode,
    mtime: PAST,
    deleted: false,
    origin: "A",
  };
}

function symlinkRecord(path: string, version: number, target: string): IndexRecord {
  return {
    path,
    version,
    kind: "symlink",
    root: EMPTY_FILE_ROOT,
    size: new TextEncoder().encode(target).length,
    mode: 0o777,
    mtime: PAST,
    target,
    deleted: false,
    origin: "A",
  };
}

async function tempNames(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) if (isTempName(e.name)) out.push(e.name);
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && toHex(sha256(a)) === toHex(sha256(b));
}

Deno.test("materialize: a new file arrives with its mode and mtime; a rescan reads nothing", async () => {
  await withNode(async (store, remote) => {
    const content = bytesOf(1, 700_000);
    const rec = await remote.file("docs/a.bin", content, { mode: 0o640, mtime: PAST });
    const writes: [string, ExpectedEntry][] = [];
    const r = await materialize(store, rec, remote, { onWrite: (p, e) => writes.push([p, e]) });
    assert.equal(r.status, "written");
    assert.equal(r.bytesFetched, content.length);
    assert.equal(remote.chunkCalls, 1, "all missing chunks in one fetch");
    const abs = `${store.root}/docs/a.bin`;
    assert.ok(sameBytes(await Deno.readFile(abs), content));
    const info = await Deno.stat(abs);
    assert.equal(info.mode! & 0o7777, 0o640);
    assert.equal(info.mtime!.getTime(), PAST);
    assert.deepEqual(writes, [["docs/a.bin", { kind: "file", size: content.length, mtime: PAST }]]);
    assert.deepEqual(await tempNames(`${store.root}/docs`), []);

    // Local records: file index matches the disk, synced state is the committed version,
    // and every chunk is located in the new file.
    const local = (await store.files.get("docs/a.bin"))!;
    assert.equal(local.ino, info.ino);
    assert.equal(toHex(local.root), toHex(rec.root));
    const synced = await new SyncedState(store.kv).get("docs/a.bin");
    assert.equal(synced?.version, rec.version);
    for await (const c of walkFileChunks(rec.root, store.packs)) {
      assert.equal((await store.locator.lookup(c.hash))?.path, "docs/a.bin");
    }
    const scan = await scanTree(store, { workers: 0 });
    assert.equal(scan.hashedFiles, 0, "the materialized file is not re-read");
    // Nothing to upload afterwards (the parent dir, made here, is merely adopted).
    const plan = reconcile(
      await store.files.loadAll(),
      await new SyncedState(store.kv).loadAll(),
      new Map([[rec.path, rec], ["docs", dirRecord("docs", 50)]]),
    );
    assert.deepEqual(plan.upload, []);
    assert.deepEqual(plan.conflicts, []);
  });
});

Deno.test("materialize: an overwrite fetches only the chunks the node lacks", async () => {
  await withNode(async (store, remote) => {
    const v1 = bytesOf(2, 3_000_000);
    const r1 = await materialize(store, await remote.file("big.bin", v1), remote);
    assert.equal(r1.status, "written");
    const allChunks = r1.chunksFetched;
    assert.ok(allChunks > 10);
    const v2 = new Uint8Array(v1.length + 1);
    v2.set(v1.subarray(0, 1_500_000));
    v2[1_500_000] = 7;
    v2.set(v1.subarray(1_500_000), 1_500_001);
    const rec2 = await remote.file("big.bin", v2, { mtime: PAST + 1000 });
    const r2 = await materialize(store, rec2, remote);
    assert.equal(r2.status, "written");
    assert.ok(r2.chunksFetched <= 3, `fetched ${r2.chunksFetched} of ${allChunks} chunks`);
    assert.ok(sameBytes(await Deno.readFile(`${store.root}/big.bin`), v2));
    assert.equal((await scanTree(store, { workers: 0 })).hashedFiles, 0);
  });
});

Deno.test("materialize: a new large file's tree comes a level per fetch, not a node at a time", async () => {
  await withNode(async (store, remote) => {
    const content = bytesOf(9, 40 << 20);
    const rec = await remote.file("large.bin", content);
    const r = await materialize(store, rec, remote);
    assert.equal(r.status, "written");
    assert.ok(sameBytes(await Deno.readFile(`${store.root}/large.bin`), content));
    assert.equal(remote.nodesServed, 0, "no node fetched on its own");
    // Root, then its children (the leaves), then one window of chunks.
    assert.equal(remote.chunkCalls, 3);
  });
});

Deno.test("materialize: chunks come from other files of the tree, then packs, then the remote", async () => {
  await withNode(async (store, remote) => {
    // The node holds the first part of the content in an unrelated file of its own tree.
    const partA = bytesOf(3, 400_000);
    const partB = bytesOf(4, 400_000);
    const partC = bytesOf(5, 400_000);
    await Deno.writeFile(`${store.root}/local.bin`, partA);
    await scanTree(store, { workers: 0 });
    const whole = new Uint8Array([...partA, ...partB, ...partC]);
    const rec = await remote.file("whole.bin", whole);
    // ... and the chunks of the middle part sit in its pack store.
    const chunks: { hash: Hash; offset: number; length: number }[] = [];
    for await (const c of walkFileChunks(rec.root, remote.store.packs)) chunks.push(c);
    const inB = chunks.filter((c) => c.offset >= 450_000 && c.offset + c.length <= 800_000);
    assert.ok(inB.length > 0);
    for (const c of inB) {
      store.packs.put(c.hash, whole.slice(c.offset, c.offset + c.length));
    }
    const localHas = new Set<string>();
    for await (const c of walkFileChunks((await store.files.get("local.bin"))!.root, store.packs)) {
      localHas.add(toHex(c.hash));
    }
    for (const c of inB) localHas.add(toHex(c.hash));
    const expectRemote = new Set(
      chunks.filter((c) => !localHas.has(toHex(c.hash))).map((c) => toHex(c.hash)),
    );

    const r = await materialize(store, rec, remote);
    assert.equal(r.status, "written");
    assert.equal(r.chunksFetched, expectRemote.size);
    assert.equal(remote.chunksServed, expectRemote.size);
    assert.ok(r.chunksFetched < chunks.length / 2);
    assert.ok(sameBytes(await Deno.readFile(`${store.root}/whole.bin`), whole));
  });
});

Deno.test("materialize: a stale chunk location counts as missing and is fetched", async () => {
  await withNode(async (store, remote) => {
    const content = bytesOf(6, 200_000);
    await Deno.writeFile(`${store.root}/seed.bin`, content);
    await scanTree(store, { workers: 0 });
    // The file changes behind the locator's back (no rescan).
    await Deno.writeFile(`${store.root}/seed.bin`, bytesOf(7, 200_000));
    const rec = await remote.file("copy.bin", content);
    const r = await materialize(store, rec, remote);
    assert.equal(r.status, "written");
    assert.equal(r.bytesFetched, content.length);
    assert.ok(sameBytes(await Deno.readFile(`${store.root}/copy.bin`), content));
  });
});

Deno.test("materialize: small windows still assemble the file (one fetch per window)", async () => {
  await withNode(async (store, remote) => {
    const content = bytesOf(8, 1_500_000);
    const rec = await remote.file("w.bin", content);
    const r = await materialize(store, rec, remote, { windowChunks: 4 });
    assert.equal(r.status, "written");
    assert.ok(remote.chunkCalls >= Math.floor(r.chunksFetched / 4));
    assert.ok(sameBytes(await Deno.readFile(`${store.root}/w.bin`), content));
  });
});

Deno.test("materialize: empty files, and same content with new mode/mtime touches metadata only", async () => {
  await withNode(async (store, remote) => {
    const empty = await remote.file("empty", new Uint8Array(0));
    assert.equal((await materialize(store, empty, remote)).status, "written");
    assert.equal((await Deno.stat(`${store.root}/empty`)).size, 0);

    const rec = await remote.file("m.txt", bytesOf(9, 5000));
    assert.equal((await materialize(store, rec, remote)).status, "written");
    const ino = (await Deno.stat(`${store.root}/m.txt`)).ino;
    const meta = { ...rec, version: rec.version + 1, mode: 0o600, mtime: PAST + 5000 };
    const before = remote.chunksServed;
    const r = await materialize(store, meta, remote);
    assert.equal(r.status, "written");
    assert.equal(remote.chunksServed, before, "no chunk moved");
    const info = await Deno.stat(`${store.root}/m.txt`);
    assert.equal(info.ino, ino, "changed in place");
    assert.equal(info.mode! & 0o7777, 0o600);
    assert.equal(info.mtime!.getTime(), PAST + 5000);
    assert.equal((await materialize(store, meta, remote)).status, "unchanged");
    assert.equal((await new SyncedState(store.kv).get("m.txt"))?.version, meta.version);
  });
});

Deno.test("materialize: directories and symlinks (never followed), and kind changes", async () => {
  await withNode(async (store, remote) => {
    const d = await materialize(store, dirRecord("d", 5, 0o700), remote);
    assert.equal(d.status, "written");
    assert.equal((await Deno.lstat(`${store.root}/d`)).mode! & 0o7777, 0o700);
    assert.equal((await materialize(store, dirRecord("d", 6, 0o700), remote)).status, "unchanged");
    assert.equal((await materialize(store, dirRecord("d", 7, 0o755), remote)).status, "written");
    assert.equal((await Deno.lstat(`${store.root}/d`)).mode! & 0o7777, 0o755);

    // A symlink pointing outside the tree is data: created as is, never followed.
    const l = await materialize(store, symlinkRecord("d/link", 8, "../../outside"), remote);
    assert.equal(l.status, "written");
    assert.equal(await Deno.readLink(`${store.root}/d/link`), "../../outside");
    assert.equal((await store.files.get("d/link"))?.target, "../../outside");
    assert.equal(
      (await materialize(store, symlinkRecord("d/link", 9, "../../outside"), remote)).status,
      "unchanged",
    );
    // Retarget, then replace the symlink by a file, the file by a directory and back.
    await materialize(store, symlinkRecord("d/link", 10, "elsewhere"), remote);
    assert.equal(await Deno.readLink(`${store.root}/d/link`), "elsewhere");
    const f = await remote.file("d/link", bytesOf(10, 100));
    assert.equal((await materialize(store, f, remote)).status, "written");
    assert.ok((await Deno.lstat(`${store.root}/d/link`)).isFile);
    await materialize(store, dirRecord("d/link", 200), remote);
    assert.ok((await Deno.lstat(`${store.root}/d/link`)).isDirectory);
    const f2 = await remote.file("d/link", bytesOf(11, 100));
    assert.equal((await materialize(store, f2, remote)).status, "written");
    assert.ok((await Deno.lstat(`${store.root}/d/link`)).isFile);
    assert.equal((await store.files.get("d/link"))?.kind, "file");
  });
});

Deno.test("materialize: tombstones delete files, symlinks and empty directories", async () => {
  await withNode(async (store, remote) => {
    const f = await remote.file("a/f.txt", bytesOf(12, 1000));
    await materialize(store, dirRecord("a", 1), remote);
    await materialize(store, f, remote);
    await materialize(store, symlinkRecord("a/l", 3, "f.txt"), remote);
    const writes: string[] = [];
    const onWrite = (p: string, e: ExpectedEntry) => writes.push(`${p}:${e.kind}`);
    const del = await materialize(store, { ...f, version: 300, deleted: true }, remote, {
      onWrite,
    });
    assert.equal(del.status, "deleted");
    assert.deepEqual(writes, ["a/f.txt:absent"]);
    assert.equal(await store.files.get("a/f.txt"), null);
    assert.equal(await new SyncedState(store.kv).get("a/f.txt"), null);
    // The directory still holds the symlink: its removal waits (nothing is forced).
    const dirTomb = { ...dirRecord("a", 301), deleted: true };
    assert.equal((await materialize(store, dirTomb, remote)).status, "local-changed");
    const lt = { ...symlinkRecord("a/l", 302, "f.txt"), deleted: true };
    assert.equal((await materialize(store, lt, remote)).status, "deleted");
    assert.equal((await materialize(store, dirTomb, remote)).status, "deleted");
    await assert.rejects(Deno.lstat(`${store.root}/a`), Deno.errors.NotFound);
    // Already gone: nothing to do.
    assert.equal((await materialize(store, dirTomb, remote)).status, "unchanged");
  });
});

Deno.test("materialize: local edits are never overwritten or deleted", async () => {
  await withNode(async (store, remote) => {
    const v1 = await remote.file("f.txt", bytesOf(13, 3000));
    await materialize(store, v1, remote);
    const v2 = await remote.file("f.txt", bytesOf(14, 3000), { mtime: PAST + 1 });
    const abs = `${store.root}/f.txt`;

    // 1. Edited after the last scan (the scanner has not seen it).
    const mine = new TextEncoder().encode("my unsaved work");
    await Deno.writeFile(abs, mine);
    let r = await materialize(store, v2, remote);
    assert.equal(r.status, "local-changed");
    assert.deepEqual(await Deno.readFile(abs), mine);
    r = await materialize(store, { ...v1, version: 999, deleted: true }, remote);
    assert.equal(r.status, "local-changed");
    assert.deepEqual(await Deno.readFile(abs), mine);

    // 2. Scanned but not yet uploaded (not committed): still protected.
    await scanTree(store, { workers: 0 });
    r = await materialize(store, v2, remote);
    assert.equal(r.status, "local-changed");
    assert.match(r.reason!, /not committed/);
    assert.deepEqual(await Deno.readFile(abs), mine);

    // 3. An entry the scanner never saw.
    await Deno.writeTextFile(`${store.root}/new.txt`, "fresh");
    const other = await remote.file("new.txt", bytesOf(15, 10));
    assert.equal((await materialize(store, other, remote)).status, "local-changed");
    assert.equal(await Deno.readTextFile(`${store.root}/new.txt`), "fresh");

    // Kept as a conflict copy, the path is free for the committed version.
    const copy = await keepConflictCopy(store, "f.txt", "node-b", PAST);
    assert.equal(copy, "f.conflict-node-b-20210601-120000.txt");
    assert.deepEqual(await Deno.readFile(`${store.root}/${copy}`), mine);
    assert.equal((await materialize(store, v2, remote)).status, "written");
    assert.ok(sameBytes(await Deno.readFile(abs), bytesOf(14, 3000)));
    // A second conflict copy at the same second gets a counter.
    await Deno.writeTextFile(abs, "again");
    assert.equal(
      await keepConflictCopy(store, "f.txt", "node-b", PAST),
      "f.conflict-node-b-20210601-120000-2.txt",
    );
  });
});

Deno.test("materialize: a symlinked ancestor is refused and nothing is written outside", async () => {
  await withNode(async (store, remote) => {
    const outside = await Deno.makeTempDir({ prefix: "fs-outside-" });
    try {
      await Deno.writeTextFile(`${outside}/victim.txt`, "keep me");
      await Deno.symlink(outside, `${store.root}/escape`);
      await scanTree(store, { workers: 0 });
      const rec = await remote.file("escape/victim.txt", bytesOf(16, 100));
      await assert.rejects(materialize(store, rec, remote), UnsafePathError);
      await assert.rejects(
        materialize(store, await remote.file("escape/new.txt", bytesOf(17, 100)), remote),
        (e: unknown) => e instanceof UnsafePathError && e.reason === "symlink",
      );
      await assert.rejects(
        materialize(store, { ...rec, version: 500, deleted: true }, remote),
        UnsafePathError,
      );
      await assert.rejects(
        materialize(store, dirRecord("escape/sub", 501), remote),
        UnsafePathError,
      );
      await assert.rejects(
        materialize(store, symlinkRecord("escape/l", 502, "x"), remote),
        UnsafePathError,
      );
      const names = (await Array.fromAsync(Deno.readDir(outside))).map((e) => e.name);
      assert.deepEqual(names, ["victim.txt"]);
      assert.equal(await Deno.readTextFile(`${outside}/victim.txt`), "keep me");
      // A file where a directory should be is refused too.
      await Deno.writeTextFile(`${store.root}/plain`, "x");
      await assert.rejects(
        materialize(store, dirRecord("plain/x", 503), remote),
        (e: unknown) => e instanceof UnsafePathError && e.reason === "not-a-directory",
      );
      // Invalid paths never reach the file system.
      await assert.rejects(
        materialize(store, { ...dirRecord("ok", 504), path: "../up" }, remote),
        PathError,
      );
      await assert.rejects(
        materialize(store, { ...dirRecord("ok", 505), path: ".filesync/x" }, remote),
        PathError,
      );
    } finally {
      await Deno.remove(outside, { recursive: true });
    }
  });
});

Deno.test("materialize: corrupt remote bytes are refused; the old file stays whole", async () => {
  await withNode(async (store, remote) => {
    const v1 = bytesOf(19, 300_000);
    await materialize(store, await remote.file("c.bin", v1), remote);
    const v2 = await remote.file("c.bin", bytesOf(20, 300_000), { mtime: PAST + 1 });
    remote.corrupt = true;
    await assert.rejects(materialize(store, v2, remote), ChunkFetchError);
    assert.ok(sameBytes(await Deno.readFile(`${store.root}/c.bin`), v1));
    assert.deepEqual(await tempNames(store.root), []);
    // A remote that delivers nothing is an error too, not a short file.
    remote.corrupt = false;
    const silent: MaterializeSources = { nodes: remote.nodes, fetchChunks: async () => {} };
    await assert.rejects(materialize(store, v2, silent), ChunkFetchError);
    assert.ok(sameBytes(await Deno.readFile(`${store.root}/c.bin`), v1));
    assert.deepEqual(await tempNames(store.root), []);
  });
});

Deno.test("materialize: while the new version is assembled the target shows the old one", async () => {
  await withNode(async (store, remote) => {
    const v1 = bytesOf(21, 500_000);
    await materialize(store, await remote.file("t.bin", v1), remote);
    const v2 = bytesOf(22, 500_000);
    const rec = await remote.file("t.bin", v2, { mtime: PAST + 1 });
    let seen = 0;
    remote.during = async () => {
      assert.ok(sameBytes(await Deno.readFile(`${store.root}/t.bin`), v1));
      seen = (await tempNames(store.root)).length;
    };
    assert.equal((await materialize(store, rec, remote)).status, "written");
    assert.equal(seen, 1, "the new version was being written to a temp file");
    assert.ok(sameBytes(await Deno.readFile(`${store.root}/t.bin`), v2));
    // A local edit made while the content was being fetched wins: nothing is renamed over it.
    const v3 = await remote.file("t.bin", bytesOf(23, 500_000), { mtime: PAST + 2 });
    remote.during = async () => {
      await Deno.writeTextFile(`${store.root}/t.bin`, "edited meanwhile");
    };
    assert.equal((await materialize(store, v3, remote)).status, "local-changed");
    assert.equal(await Deno.readTextFile(`${store.root}/t.bin`), "edited meanwhile");
    assert.deepEqual(await tempNames(store.root), []);
  });
});

Deno.test("materialize: leftover temp files are swept; isTempName names them", async () => {
  await withNode(async (store) => {
    await Deno.mkdir(`${store.root}/sub`);
    await Deno.writeTextFile(`${store.root}/.filesync-tmp-0011`, "x");
    await Deno.writeTextFile(`${store.root}/sub/.filesync-tmp-abcd`, "x");
    await Deno.writeTextFile(`${store.root}/sub/keep.txt`, "x");
    assert.equal(await sweepTempFiles(store.root), 2);
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(`${store.root}/sub`))).map((e) => e.name),
      ["keep.txt"],
    );
    assert.ok(isTempName(".filesync-tmp-1234"));
    assert.ok(!isTempName("filesync-tmp-1234"));
    assert.ok(!isTempName(".filesync"));
  });
});

Deno.test("synced state: put/get/list/delete/adopt/recordUpload through KvBatch", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const st = new SyncedState(kv);
    const batch = new KvBatch(kv);
    const file: IndexRecord = {
      path: "a.txt",
      version: 4,
      kind: "file",
      root: sha256(new Uint8Array([1])),
      size: 3,
      mode: 0o644,
      mtime: PAST,
      deleted: false,
      origin: "A",
    };
    await st.adopt(batch, "a.txt", file);
    await st.adopt(batch, "l", symlinkRecord("l", 5, "target"));
    await st.put(batch, "d", syncedFromIndex(dirRecord("d", 6)));
    await batch.flush();
    assert.equal((await st.get("a.txt"))?.version, 4);
    assert.equal((await st.get("l"))?.target, "target");
    assert.deepEqual([...(await st.loadAll()).keys()], ["a.txt", "d", "l"]);
    // A tombstone (or nothing) removes the record.
    await st.adopt(batch, "a.txt", { ...file, version: 9, deleted: true });
    await st.delete(batch, "d");
    await batch.flush();
    assert.deepEqual([...(await st.loadAll()).keys()], ["l"]);
    // Records implied by committed uploads.
    const local = new Map([["to", {
      kind: "file" as const,
      size: 3,
      mtime: PAST,
      mode: 0o600,
      ino: 1,
      root: file.root,
    }]]);
    await st.recordUpload(
      batch,
      { op: "mkdir", path: "m", base: 0, mode: 0o700, mtime: 1 },
      10,
      local,
    );
    await st.recordUpload(
      batch,
      { op: "rename", from: "l", fromBase: 5, to: "to", toBase: 0 },
      11,
      local,
    );
    await batch.flush();
    assert.deepEqual([...(await st.loadAll()).keys()], ["m", "to"]);
    assert.equal((await st.get("m"))?.mode, 0o700);
    assert.equal((await st.get("to"))?.version, 11);
    // Damaged values are reported, not returned.
    await kv.set(["synced", "bad"], { version: "x" });
    await assert.rejects(st.get("bad"), SchemaError);
    assert.throws(() => parseSyncedRecord({ ...syncedFromIndex(file), version: 0 }), SchemaError);
  } finally {
    kv.close();
  }
});

Deno.test("materialize: small files prefetched in two round trips, recorded in one group", async () => {
  await withNode(async (store, remote) => {
    const files = await Promise.all(
      Array.from({ length: 12 }, (_, i) => bytesOf(40 + i, 1_000 + 3_000 * i)),
    );
    const recs: IndexRecord[] = [];
    for (let i = 0; i < files.length; i++) recs.push(await remote.file(`s/f${i}.bin`, files[i]));
    // The cluster as the engine sees it: one fetch call serves any objects (nodes or chunks).
    let calls = 0;
    const objects: RemoteObjects = {
      fetch(hashes, onObject) {
        calls++;
        return remote.deliver(hashes, onObject);
      },
    };
    const ahead = await prefetchObjects(store, objects, recs);
    assert.equal(calls, 2, "roots in one request, then their chunks in one");
    assert.ok(ahead.size >= 2 * files.length, "a node and at least one chunk per file");
    // Written from what was prefetched: the remote is never asked again, and the store is
    // not searched for chunks fetched because it held them nowhere.
    const sources: MaterializeSources = {
      nodes: { getNode: (h) => Promise.resolve(ahead.get(h)!) },
      fetchChunks: () => Promise.reject(new Error("every chunk was prefetched")),
      inMemory: (h) => ahead.get(h),
    };
    let lookups = 0;
    const whereIs = store.whereIs.bind(store);
    store.whereIs = (h) => {
      lookups++;
      return whereIs(h);
    };
    await Deno.mkdir(`${store.root}/s`);
    const group = new WriteGroup(store);
    for (const rec of recs) {
      const r = await materialize(store, rec, sources, { group });
      assert.equal(r.status, "written");
      assert.equal(r.bytesFetched, rec.size);
    }
    assert.equal(lookups, 0);
    // Nothing is recorded until the group finishes; then everything is, and a rescan reads
    // nothing.
    assert.equal(await store.files.get("s/f0.bin"), null);
    await group.finish();
    for (let i = 0; i < files.length; i++) {
      assert.ok(sameBytes(await Deno.readFile(`${store.root}/s/f${i}.bin`), files[i]));
      assert.ok(await store.files.get(`s/f${i}.bin`));
    }
    assert.equal((await scanTree(store, { workers: 0 })).hashedFiles, 0);
    assert.equal(remote.chunkCalls, 0);
  });
});

Deno.test("materialize: a large file's edits start from a copy of the old file, verified", async () => {
  await withNode(async (store, remote) => {
    const v1 = bytesOf(60, 20 * 1024 * 1024);
    const r1 = await materialize(store, await remote.file("huge.bin", v1), remote);
    assert.equal(r1.status, "written");
    const all = r1.chunksFetched;
    const abs = `${store.root}/huge.bin`;
    const edits: [string, (b: Uint8Array) => Uint8Array][] = [
      ["overwrite", (b) => {
        const c = b.slice();
        c.fill(1, 7_000_000, 7_004_096);
        return c;
      }],
      ["insert", (b) => {
        const c = new Uint8Array(b.length + 1);
        c.set(b.subarray(0, 9_000_000));
        c[9_000_000] = 2;
        c.set(b.subarray(9_000_000), 9_000_001);
        return c;
      }],
      ["shrink", (b) => b.slice(0, 15_000_000)],
      ["grow", (b) => {
        const c = new Uint8Array(b.length + 2_000_000);
        c.set(b);
        c.set(bytesOf(61, 2_000_000), b.length);
        return c;
      }],
    ];
    let content = v1;
    let mtime = PAST + 10_000;
    for (const [what, edit] of edits) {
      content = edit(content);
      const rec = await remote.file("huge.bin", content, { mtime: mtime += 1000 });
      const r = await materialize(store, rec, remote);
      assert.equal(r.status, "written", what);
      assert.ok(sameBytes(await Deno.readFile(abs), content), `${what}: bytes differ`);
      assert.ok(r.chunksFetched <= 40, `${what}: fetched ${r.chunksFetched} of ${all} chunks`);
    }

    // The old file changed behind our back without a trace in size, mtime or inode: the copy
    // of it is verified chunk by chunk, so the damage is not carried into the new version.
    const info = await Deno.stat(abs);
    const f = await Deno.open(abs, { write: true });
    await f.seek(3_000_000, Deno.SeekMode.Start);
    await f.write(new Uint8Array(1000).fill(0xee));
    f.close();
    await Deno.utime(abs, info.atime!, info.mtime!);
    content = content.slice();
    content[12_000_000] ^= 0xff;
    const rec = await remote.file("huge.bin", content, { mtime: mtime += 1000 });
    const r = await materialize(store, rec, remote);
    assert.equal(r.status, "written");
    assert.ok(sameBytes(await Deno.readFile(abs), content), "damage carried into the new version");
  });
});

Deno.test("materialize: records wait for the tree nodes they name, not for objects pushed meanwhile", async () => {
  await withNode(async (store, remote) => {
    // An object another node is pushing here: accepted, not flushed yet.
    const pushed = bytesOf(9, 5000);
    const pushedHash = sha256(pushed);
    store.packs.put(pushedHash, pushed);

    assert.equal((await materialize(store, dirRecord("docs", 60), remote)).status, "written");
    assert.ok(store.packs.hasPending(pushedHash), "a directory's record flushed nothing");

    // A file whose tree node is fetched here: that node is durable once the file is recorded.
    const rec = await remote.file("docs/a.bin", bytesOf(2, 300_000));
    assert.equal((await materialize(store, rec, remote)).status, "written");
    assert.ok(!store.packs.hasPending(rec.root) && await store.packs.has(rec.root));
    assert.ok(store.packs.hasPending(pushedHash), "the file's record flushed only its own nodes");

    // The same through a write group (small files recorded together).
    const small = await remote.file("docs/b.bin", bytesOf(3, 2000));
    const group = new WriteGroup(store);
    assert.equal((await materialize(store, small, remote, { group })).status, "written");
    await group.finish();
    assert.ok(!store.packs.hasPending(small.root) && await store.packs.has(small.root));
    assert.ok(store.packs.hasPending(pushedHash), "the group flushed only its own nodes");

    // A scan, likewise: its files' nodes are durable, the pushed object still pending.
    await Deno.writeFile(`${store.root}/docs/c.bin`, bytesOf(4, 9000));
    await scanTree(store, { workers: 0 });
    const scanned = (await store.files.get("docs/c.bin"))!;
    assert.ok(!store.packs.hasPending(scanned.root) && await store.packs.has(scanned.root));
    assert.ok(store.packs.hasPending(pushedHash), "the scan flushed only its own nodes");

    await store.packs.flush([pushedHash]);
    assert.ok(!store.packs.hasPending(pushedHash));
  });
});

Deno.test("materialize: a tree node pushed here and still pending is durable before the record", async () => {
  for (const grouped of [false, true]) {
    await withNode(async (store, remote) => {
      const rec = await remote.file("p/a.bin", bytesOf(7, grouped ? 3000 : 300_000));
      // A push put the file's tree node before the commit; its flush has not run yet.
      store.packs.put(rec.root, await remote.store.packs.get(rec.root));
      const group = grouped ? new WriteGroup(store) : undefined;
      assert.equal((await materialize(store, rec, remote, { group })).status, "written");
      await group?.finish();
      assert.equal(toHex((await store.files.get("p/a.bin"))!.root), toHex(rec.root));
      assert.ok(
        !store.packs.hasPending(rec.root),
        `the record names a pending node (group: ${grouped})`,
      );
    });
  }
});
