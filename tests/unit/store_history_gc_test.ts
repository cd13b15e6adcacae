/**
 * History and garbage collection: the materializer packs the chunks of a version it replaces
 * (only those the new version lacks) and makes them durable before the old file goes; the
 * collector keeps every object of a retained version, drops what only pruned versions used
 * once it is older than the grace period, and drops nothing by that rule when a retained tree
 * cannot be read.
 */
import assert from "node:assert/strict";
import { type Hash, hashKey, sha256, toHex } from "../../src/chunk/mod.ts";
import { buildDirTree, buildFileTree, walkFileChunks } from "../../src/merkle/mod.ts";
import { KvBatch, LocalStore } from "../../src/store/mod.ts";
import { objectKey } from "../../src/store/schema.ts";
import { materialize } from "../../src/sync/mod.ts";
import { seededBytes } from "../helpers/bytes.ts";
import { withNode } from "../helpers/fake_remote.ts";

const HOUR = 60 * 60 * 1000;

/** Whether the object's index entry is committed: it is then durable (packs.ts). */
async function durable(store: LocalStore, hash: Hash): Promise<boolean> {
  return (await store.kv.get(objectKey(hash))).value !== null;
}

const keys = (hashes: Hash[]) => new Set(hashes.map(hashKey));

Deno.test("history: replacing v1 by v2 packs exactly v1's chunks that v2 lacks, before the rename", async () => {
  await withNode(async (store, remote) => {
    const v1Bytes = seededBytes(7, 1 << 20);
    const v1 = await remote.file("f.bin", v1Bytes);
    assert.equal((await materialize(store, v1, remote)).status, "written");
    // A 4 KiB overwrite in the middle: one or two chunks change.
    const v2Bytes = v1Bytes.slice();
    v2Bytes.set(seededBytes(99, 4096), 500_000);
    const v2 = await remote.file("f.bin", v2Bytes);
    const v1Chunks = await remote.chunks(v1.root);
    const v2Keys = keys(await remote.chunks(v2.root));
    const lost = v1Chunks.filter((h) => !v2Keys.has(hashKey(h)));
    assert.ok(lost.length >= 1 && lost.length <= 3, `${lost.length} chunks changed`);

    let checkedAtWrite = false;
    const r = await materialize(store, v2, remote, {
      onWrite: async () => {
        // Called just before the rename: the preserved chunks must be durable already.
        for (const h of lost) assert.ok(await durable(store, h), `${toHex(h)} not durable`);
        checkedAtWrite = true;
      },
    });
    assert.equal(r.status, "written");
    assert.ok(checkedAtWrite);
    for (const h of v1Chunks) {
      const lostHere = !v2Keys.has(hashKey(h));
      assert.equal(await store.packs.has(h), lostHere, `chunk ${toHex(h)}`);
    }
    for (const h of lost) assert.equal(toHex(sha256(await store.packs.get(h))), toHex(h));
  });
});

Deno.test("history: a 4 KiB edit of a large file (copy-then-verify path) packs a chunk or two", async () => {
  await withNode(async (store, remote) => {
    const v1Bytes = seededBytes(31, 20 << 20);
    await materialize(store, await remote.file("big.bin", v1Bytes), remote);
    const packsBefore = await store.packs.diskUsage();
    const v2Bytes = v1Bytes.slice();
    v2Bytes.set(seededBytes(32, 4096), 10 << 20);
    assert.equal(
      (await materialize(store, await remote.file("big.bin", v2Bytes), remote)).status,
      "written",
    );
    const grown = (await store.packs.diskUsage()) - packsBefore;
    assert.ok(grown < 1 << 20, `packs grew by ${grown} bytes`);
    assert.deepEqual(await Deno.readFile(`${store.root}/big.bin`), v2Bytes);
  });
});

Deno.test("history: a failure between the pack flush and the rename leaves both copies", async () => {
  await withNode(async (store, remote) => {
    const v1Bytes = seededBytes(11, 300_000);
    const v1 = await remote.file("g.bin", v1Bytes);
    await materialize(store, v1, remote);
    const v2 = await remote.file("g.bin", seededBytes(12, 300_000));
    const crash = new Error("crash before the rename");
    await assert.rejects(
      materialize(store, v2, remote, {
        onWrite: () => {
          throw crash;
        },
      }),
      crash,
    );
    // The old file is untouched and every one of its chunks is durable in the packs.
    assert.deepEqual(await Deno.readFile(`${store.root}/g.bin`), v1Bytes);
    for (const h of await remote.chunks(v1.root)) assert.ok(await durable(store, h));
  });
});

Deno.test("history: a delete packs all of v1; preserveReplaced: false packs nothing", async () => {
  await withNode(async (store, remote) => {
    const v1 = await remote.file("d.bin", seededBytes(21, 400_000));
    await materialize(store, v1, remote);
    const chunks = await remote.chunks(v1.root);
    let durableAtRemove = false;
    const r = await materialize(store, remote.tombstone(v1), remote, {
      onWrite: async () => {
        durableAtRemove = (await Promise.all(chunks.map((h) => durable(store, h)))).every(Boolean);
      },
    });
    assert.equal(r.status, "deleted");
    assert.ok(durableAtRemove, "every chunk durable before the removal");
    for (const h of chunks) assert.ok(await store.packs.has(h));

    const w1 = await remote.file("e.bin", seededBytes(22, 200_000));
    await materialize(store, w1, remote);
    await materialize(store, remote.tombstone(w1), remote, { preserveReplaced: false });
    for (const h of await remote.chunks(w1.root)) assert.equal(await store.packs.has(h), false);
  });
});

Deno.test("history: a rename (new path written, then the old one deleted) packs nothing", async () => {
  await withNode(async (store, remote) => {
    const v1 = await remote.file("a.bin", seededBytes(23, 600_000));
    await materialize(store, v1, remote);
    const moved = { ...v1, path: "b.bin", version: v1.version + 1 };
    assert.equal((await materialize(store, moved, remote)).status, "written");
    assert.equal((await materialize(store, remote.tombstone(v1), remote)).status, "deleted");
    for (const h of await remote.chunks(v1.root)) {
      assert.equal(await store.packs.has(h), false, "held by b.bin: no copy in the packs");
    }
  });
});

/** Every record takes 4 KiB with its 36-byte header; three records per pack. */
const CHUNK = 4096 - 36;
const SMALL_PACKS = { packTargetBytes: 3 * 4096 };

interface Versions {
  store: LocalStore;
  dir: string;
  chunks: Map<string, { hash: Hash; bytes: Uint8Array }>;
  /** Chunk hashes and tree roots of two versions sharing most chunks, and their nodes. */
  v1: { root: Hash; chunks: Hash[]; nodes: Hash[] };
  v2: { root: Hash; chunks: Hash[]; nodes: Hash[] };
  /** Objects no version refers to (a push whose commit never came). */
  orphans: Hash[];
}

/**
 * v1 = chunks 0..39; v2 = chunks 0..29 and 40..49; orphans 50..55; all only in the packs,
 * tree nodes first.
 */
async function versions(opts = SMALL_PACKS): Promise<Versions> {
  const dir = await Deno.makeTempDir({ prefix: "fs-hist-gc-" });
  const store = await LocalStore.open(dir, opts);
  const all = Array.from({ length: 56 }, (_, i) => {
    const bytes = seededBytes(5_001 + 2 * i, CHUNK);
    return { hash: sha256(bytes), bytes };
  });
  const chunks = new Map(all.map((c) => [hashKey(c.hash), c]));
  const tree = (list: typeof all) => {
    const nodes: Hash[] = [];
    const sink = {
      put: (hash: Hash, bytes: Uint8Array) => {
        nodes.push(hash);
        store.packs.put(hash, bytes);
      },
    };
    const { root } = buildFileTree(list.map((c) => ({ hash: c.hash, length: CHUNK })), sink);
    return { root, chunks: list.map((c) => c.hash), nodes };
  };
  const v1 = tree(all.slice(0, 40));
  const v2 = tree([...all.slice(0, 30), ...all.slice(40, 50)]);
  // Chunks both versions share go last: the pack still being appended to holds only those.
  for (const c of [...all.slice(30), ...all.slice(0, 30)]) store.packs.put(c.hash, c.bytes);
  await store.packs.flush();
  return { store, dir, chunks, v1, v2, orphans: all.slice(50).map((c) => c.hash) };
}

async function withVersions(fn: (v: Versions) => Promise<void>, opts = SMALL_PACKS) {
  const v = await versions(opts);
  try {
    await fn(v);
  } finally {
    await v.store.close().catch(() => {});
    await Deno.remove(v.dir, { recursive: true });
  }
}

async function* yieldAll(roots: Hash[]): AsyncGenerator<Hash> {
  for (const r of roots) yield r;
}

/** A restore of the version reads every chunk back (from the packs; the tree holds none). */
async function assertRestorable(v: Versions, root: Hash): Promise<void> {
  for await (const c of walkFileChunks(root, v.store.packs)) {
    const bytes = await v.store.packs.get(c.hash);
    assert.deepEqual(bytes, v.chunks.get(hashKey(c.hash))!.bytes);
  }
}

const LATER = () => Date.now() + 2 * HOUR;

Deno.test("gc: retained versions keep every object; after a prune v1's own objects go", async () => {
  await withVersions(async (v) => {
    const before = await v.store.packs.diskUsage();
    const kept = await v.store.collectGarbage({
      retainedRoots: () => yieldAll([v.v1.root, v.v2.root]),
      now: LATER(),
      minDeadFraction: 0.01,
    });
    assert.equal(kept.unreferencedSkipped, null);
    assert.equal(kept.droppedUnreferenced, v.orphans.length, "only the orphans go");
    assert.equal(kept.droppedHeld, 0);
    await assertRestorable(v, v.v1.root);
    await assertRestorable(v, v.v2.root);
    for (const h of v.orphans) assert.equal(await v.store.packs.has(h), false);

    // v1 pruned: its chunks 30..39 and its nodes v2 does not share are unreferenced now.
    const afterFirst = await v.store.packs.diskUsage();
    assert.ok(afterFirst < before);
    const pruned = await v.store.collectGarbage({
      retainedRoots: () => yieldAll([v.v2.root]),
      now: LATER(),
      minDeadFraction: 0.01,
    });
    const v2Keys = keys([...v.v2.chunks, ...v.v2.nodes]);
    const v1Only = [...v.v1.chunks, ...v.v1.nodes].filter((h) => !v2Keys.has(hashKey(h)));
    assert.ok(v1Only.length >= 10);
    assert.equal(pruned.droppedUnreferenced, new Set(v1Only.map(hashKey)).size);
    for (const h of v1Only) assert.equal(await v.store.packs.has(h), false);
    await assertRestorable(v, v.v2.root);
    assert.ok((await v.store.packs.diskUsage()) < afterFirst, "pack bytes shrink");
  });
});

Deno.test("gc: unreferenced objects younger than the grace period, or in the current pack, stay", async () => {
  await withVersions(async (v) => {
    // Just written: within the default grace period of an hour.
    const young = await v.store.collectGarbage({
      retainedRoots: () => yieldAll([v.v2.root]),
      minDeadFraction: 0.01,
    });
    assert.equal(young.droppedUnreferenced, 0);
    // Past it, but with an explicit grace longer than that.
    const longGrace = await v.store.collectGarbage({
      retainedRoots: () => yieldAll([v.v2.root]),
      now: LATER(),
      graceMs: 3 * HOUR,
      minDeadFraction: 0.01,
    });
    assert.equal(longGrace.droppedUnreferenced, 0);
    for (const h of [...v.orphans, ...v.v1.chunks]) assert.ok(await v.store.packs.has(h));
  });
  // Everything in one pack, still being appended to: never collected by age.
  await withVersions(async (v) => {
    const stats = await v.store.collectGarbage({
      retainedRoots: () => yieldAll([]),
      now: LATER(),
      minDeadFraction: 0.01,
    });
    assert.equal(stats.droppedUnreferenced, 0);
    for (const h of v.orphans) assert.ok(await v.store.packs.has(h));
  }, { packTargetBytes: 64 << 20 });
});

Deno.test("gc: a retained root whose nodes are missing disables the unreferenced rule", async () => {
  await withVersions(async (v) => {
    const missing = sha256(new TextEncoder().encode("a version this node never saw"));
    const reasons: string[] = [];
    const stats = await v.store.collectGarbage({
      retainedRoots: () => yieldAll([v.v2.root, missing]),
      now: LATER(),
      minDeadFraction: 0.01,
      onSkip: (r) => reasons.push(r),
    });
    assert.match(stats.unreferencedSkipped ?? "", new RegExp(toHex(missing)));
    assert.equal(reasons.length, 1);
    assert.equal(stats.droppedUnreferenced, 0);
    for (const h of [...v.orphans, ...v.v1.chunks]) assert.ok(await v.store.packs.has(h));
  });
});

Deno.test("gc: nodes a peer supplies (GcOptions.nodes) let the unreferenced rule run", async () => {
  await withVersions(async (v) => {
    // A version this node never saw: a one-leaf tree whose chunk is v2's first; only a "peer"
    // (the nodes source) has its node.
    const leaf = buildFileTree([{ hash: v.v2.chunks[0], length: CHUNK }], { put: () => {} });
    const peerNodes = new Map<string, Uint8Array>();
    buildFileTree([{ hash: v.v2.chunks[0], length: CHUNK }], {
      put: (h, b) => peerNodes.set(hashKey(h), b),
    });
    const asked: string[] = [];
    const stats = await v.store.collectGarbage({
      retainedRoots: () => yieldAll([v.v2.root, leaf.root]),
      now: LATER(),
      minDeadFraction: 0.01,
      nodes: {
        getNode: async (h) => {
          if (await v.store.packs.has(h)) return await v.store.packs.get(h);
          asked.push(toHex(h));
          const b = peerNodes.get(hashKey(h));
          if (!b) throw new Error("no peer has it");
          return b;
        },
      },
    });
    assert.deepEqual(asked, [toHex(leaf.root)]);
    assert.equal(stats.unreferencedSkipped, null);
    assert.ok(stats.droppedUnreferenced > 0, "orphans and v1-only objects go");
    for (const h of v.orphans) assert.equal(await v.store.packs.has(h), false);
  });
});

Deno.test("gc: directory-tree nodes, files of the last scan and pinned objects stay", async () => {
  await withVersions(async (v) => {
    const dirNodes: Hash[] = [];
    buildDirTree(
      [{ path: "a", kind: "file", root: v.v1.root, size: 40 * CHUNK, mode: 0o644, mtime: 1 }],
      {
        put: (hash, bytes) => {
          dirNodes.push(hash);
          v.store.packs.put(hash, bytes);
        },
      },
    );
    // Fill the pack so the dir node lands in a sealed one.
    for (let i = 0; i < 3; i++) {
      const b = seededBytes(9_001 + 2 * i, CHUNK);
      v.store.packs.put(sha256(b), b);
    }
    await v.store.packs.flush();
    // The last scan saw a file with v1's content: a local edit not uploaded yet, say.
    const batch = new KvBatch(v.store.kv);
    await v.store.files.put(batch, "a", {
      kind: "file",
      size: 40 * CHUNK,
      mtime: 1,
      mode: 0o644,
      ino: 1,
      root: v.v1.root,
    });
    await batch.flush();
    const release = v.store.pins.pin([v.orphans[0]]);
    const stats = await v.store.collectGarbage({
      retainedRoots: () => yieldAll([]),
      now: LATER(),
      minDeadFraction: 0.01,
    });
    release();
    assert.ok(stats.droppedUnreferenced > 0);
    for (const h of dirNodes) assert.ok(await v.store.packs.has(h), "dir node kept");
    assert.ok(await v.store.packs.has(v.orphans[0]), "pinned object kept");
    await assertRestorable(v, v.v1.root);
    assert.equal(await v.store.packs.has(v.orphans[1]), false);
  });
});

Deno.test("gc: without retainedRoots only chunks the tree holds go, as before", async () => {
  await withVersions(async (v) => {
    const stats = await v.store.collectGarbage({ now: LATER(), minDeadFraction: 0.01 });
    assert.equal(stats.objectsDropped, 0);
    assert.equal(stats.unreferencedSkipped, "no retained roots given");
    for (const h of v.orphans) assert.ok(await v.store.packs.has(h));
  });
});
