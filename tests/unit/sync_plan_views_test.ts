/**
 * The views a sync pass plans from, kept between passes (src/sync/plan_views.ts): each load
 * must equal a whole read of the store, given what changed was touched (local and synced) or
 * applied to the index (committed). Each case also shows the store's view drifting where the
 * rule it tests is not followed, so the check itself can fail.
 */
import assert from "node:assert/strict";
import { sha256 } from "../../src/chunk/mod.ts";
import { encodeCommand, type FileOp, IndexState } from "../../src/fsm/mod.ts";
import { type FileIndex, KvBatch, type LocalFileRecord, LocalStore } from "../../src/store/mod.ts";
import {
  compareWithStore,
  PlanViews,
  type SyncedRecord,
  SyncedState,
  type ViewDifference,
} from "../../src/sync/mod.ts";

async function withStore(fn: (store: LocalStore) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "filesync-views-" });
  const store = await LocalStore.open(dir);
  try {
    await fn(store);
  } finally {
    await store.close().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

interface ViewsCase {
  store: LocalStore;
  index: IndexState;
  synced: SyncedState;
  views: PlanViews;
  /** Load the views and list where they differ from a whole read. */
  compare: () => Promise<ViewDifference[]>;
}

/** PlanViews over a fresh store; `files` may wrap the store's file index. */
async function withViews(
  fn: (c: ViewsCase) => Promise<void>,
  files: (real: FileIndex) => FileIndex = (real) => real,
): Promise<void> {
  await withStore(async (store) => {
    const index = new IndexState(store.kv);
    const synced = new SyncedState(store.kv);
    const views = new PlanViews(files(store.files), synced, index);
    const compare = async () =>
      await compareWithStore(await views.load(), store.files, synced, index);
    await fn({ store, index, synced, views, compare });
  });
}

function put(path: string, base = 0, n = 1): FileOp {
  return {
    op: "put",
    path,
    base,
    kind: "file",
    root: sha256(new TextEncoder().encode(`${path}:${n}`)),
    size: n,
    mode: 0o644,
    mtime: 1_000 + n,
  };
}

function mkdir(path: string): FileOp {
  return { op: "mkdir", path, base: 0, mode: 0o755, mtime: 1_000 };
}

/** Apply a command at the next index of `index`; asserts it was accepted. */
async function commit(index: IndexState, ops: FileOp[]): Promise<number> {
  const at = (await index.applied()) + 1;
  const r = await index.apply(at, encodeCommand({ origin: "n1", ops, time: 5_000 }));
  assert.ok(r.ok, JSON.stringify(r));
  return at;
}

function localRecord(kind: "file" | "dir", n: number): LocalFileRecord {
  return {
    kind,
    size: kind === "file" ? n : 0,
    mtime: 2_000 + n,
    mode: kind === "file" ? 0o644 : 0o755,
    ino: 100 + n,
    root: sha256(new TextEncoder().encode(`local:${n}`)),
  };
}

function syncedRecord(kind: "file" | "dir", version: number): SyncedRecord {
  return {
    version,
    kind,
    root: sha256(new TextEncoder().encode(`synced:${version}`)),
    mode: 0o644,
    mtime: 3_000,
    size: 0,
  };
}

/** Write local and synced records (null removes) in one batch. */
async function writeRecords(
  store: LocalStore,
  local: Record<string, LocalFileRecord | null>,
  synced: Record<string, SyncedRecord | null> = {},
): Promise<void> {
  const batch = new KvBatch(store.kv);
  const state = new SyncedState(store.kv);
  for (const [path, rec] of Object.entries(local)) {
    if (rec) await store.files.put(batch, path, rec);
    else await store.files.remove(batch, path);
  }
  for (const [path, rec] of Object.entries(synced)) {
    if (rec) await state.put(batch, path, rec);
    else await state.delete(batch, path);
  }
  await batch.flush();
}

Deno.test("plan views: the committed view follows applied entries; a restored snapshot is read whole", async () => {
  await withViews(async ({ index, views, compare }) => {
    const check = async () => assert.deepEqual(await compare(), []);

    const v1 = await commit(index, [mkdir("d"), put("d/a"), put("b")]);
    await check();
    await commit(index, [{ op: "delete", path: "d/a", base: v1 }, put("b", v1, 2), mkdir("e")]);
    const loaded = await views.load();
    assert.equal(loaded.committed.get("d/a")?.deleted, true);
    assert.equal(loaded.committed.get("b")?.size, 2);
    assert.ok(loaded.committed.has("e"));
    await check();

    // More changes than are worth reading one by one: the view is read whole.
    const before = await commit(index, [mkdir("many")]);
    for (let c = 0; c < 3; c++) {
      await commit(index, Array.from({ length: 100 }, (_, i) => put(`many/${c}-${i}`)));
    }
    assert.equal(await index.changedPaths(before, await index.applied(), 256), null);
    assert.equal((await index.changedPaths(before, await index.applied()))!.length, 300);
    await check();

    // Another cluster's state at a lower applied index: its "ver" keys say nothing about what
    // this view holds, so only the generation tells the view to read everything again.
    const otherDir = await Deno.makeTempDir({ prefix: "filesync-views-other-" });
    const other = await LocalStore.open(otherDir);
    try {
      const otherIndex = new IndexState(other.kv);
      await commit(otherIndex, [put("x")]);
      const before = index.generation;
      await index.restore(await otherIndex.snapshot());
      assert.notEqual(index.generation, before);
    } finally {
      await other.close();
      await Deno.remove(otherDir, { recursive: true });
    }
    const restored = await views.load();
    assert.deepEqual([...restored.committed.keys()], ["x"]);
    await check();
  });
});

Deno.test("plan views: touched paths are read again, a touched directory with everything below", async () => {
  await withViews(async ({ store, views, compare }) => {
    await writeRecords(store, {
      d: localRecord("dir", 0),
      "d/x": localRecord("file", 1),
      "d/sub": localRecord("dir", 2),
      "d/sub/y": localRecord("file", 3),
      f: localRecord("file", 4),
      "f2": localRecord("file", 5),
    }, { d: syncedRecord("dir", 1), "d/x": syncedRecord("file", 2), f: syncedRecord("file", 3) });
    assert.deepEqual(await compare(), []); // the first load reads everything

    // The directory became a file: everything below it is gone from the store.
    await writeRecords(store, {
      d: localRecord("file", 6),
      "d/x": null,
      "d/sub": null,
      "d/sub/y": null,
    }, { "d/x": null });
    // A change nobody touched is not seen: the rule the engine must follow.
    await writeRecords(store, { f: localRecord("file", 7) });
    const untouched = await compare();
    assert.ok(
      untouched.some((d) => d.view === "local" && d.path === "f"),
      JSON.stringify(untouched),
    );

    views.touch(["d"], "tree");
    views.touch(["f"], "own");
    assert.deepEqual(await compare(), []);
    const now = await views.load();
    assert.deepEqual([...now.local.keys()].sort(), ["d", "f", "f2"]);
    assert.deepEqual([...now.synced.keys()].sort(), ["d", "f"]);

    // New entries below a path that was a file: a tree touch reads them.
    await writeRecords(store, {
      f2: localRecord("dir", 8),
      "f2/new": localRecord("file", 9),
    }, { "f2/new": syncedRecord("file", 4) });
    views.touch(["f2"], "tree");
    assert.deepEqual(await compare(), []);

    // Touching an ancestor's own record does not read below it.
    await writeRecords(store, { "f2/new": localRecord("file", 10) });
    views.touch(["f2"], "own");
    assert.equal((await compare()).length, 1);
    views.touchAll();
    assert.deepEqual(await compare(), []);
  });
});

Deno.test("plan views: a load that fails leaves every view to be read whole", async () => {
  let failNext = false;
  // The file index fails once, half-way through a load (after the committed view is read).
  const failingOnce = (real: FileIndex) =>
    new Proxy(real, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target);
        if (typeof v !== "function") return v;
        return (...args: unknown[]) => {
          if (failNext && (prop === "get" || prop === "loadUnder" || prop === "loadAll")) {
            failNext = false;
            throw new Error("simulated read failure");
          }
          return v.apply(target, args);
        };
      },
    });
  await withViews(async ({ store, views, compare }) => {
    await writeRecords(store, { x: localRecord("file", 1), y: localRecord("file", 2) });
    assert.deepEqual(await compare(), []);
    await writeRecords(store, { x: null, z: localRecord("file", 3) });
    views.touch(["x", "z"], "own");
    failNext = true;
    await assert.rejects(views.load(), /simulated/);
    // The touches were taken by the failed load: only a whole read can be right now.
    assert.deepEqual(await compare(), []);
  }, failingOnce);
});

Deno.test("plan views: a touched tree is swept even where its own record is missing", async () => {
  await withViews(async ({ store, views, compare }) => {
    // Records below "A" but none for "A" itself (its own event was missed by a scan).
    await writeRecords(store, { "A/B": localRecord("dir", 1), "A/B/c": localRecord("file", 2) });
    assert.deepEqual(await compare(), []);
    await writeRecords(store, { "A/B": null, "A/B/c": null });
    views.touch(["A"], "tree");
    assert.deepEqual(await compare(), []);
  });
});
