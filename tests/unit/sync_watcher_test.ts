/**
 * The watcher: bursts become one batch, a continuous stream still yields batches, files being
 * written are held back until they settle, `.filesync/` and temp files are never reported,
 * this node's own writes (announced by the materializer) are dropped, memory is bounded, and
 * close() leaves nothing running (Deno's sanitizers check the last part in every test).
 */
import assert from "node:assert/strict";
import { EMPTY_FILE_ROOT } from "../../src/merkle/mod.ts";
import type { IndexRecord } from "../../src/fsm/mod.ts";
import { LocalStore } from "../../src/store/mod.ts";
import { materialize, type WatchBatch, Watcher, type WatcherOptions } from "../../src/sync/mod.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll until `pred` holds (bounded), returning whether it did. */
async function waitFor(pred: () => boolean, ms = 5000): Promise<boolean> {
  for (let i = 0; i < ms / 10; i++) {
    if (pred()) return true;
    await sleep(10);
  }
  return pred();
}

async function withWatcher(
  options: WatcherOptions,
  fn: (dir: string, batches: WatchBatch[], w: Watcher) => Promise<void>,
) {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "fs-watch-" }));
  const batches: WatchBatch[] = [];
  const w = new Watcher(dir, (b) => {
    batches.push(b);
  }, options);
  try {
    await fn(dir, batches, w);
  } finally {
    await w.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const allPaths = (batches: WatchBatch[]) => new Set(batches.flatMap((b) => b.paths));

Deno.test("watcher: a burst of writes becomes one batch of relative paths", async () => {
  await withWatcher({ debounceMs: 150, maxDelayMs: 5000 }, async (dir, batches) => {
    await Deno.mkdir(`${dir}/sub`);
    // A recursive watch adds the new directory's own watch asynchronously; a file written
    // into it before that is seen only by the periodic rescan. Let the watch settle first.
    assert.ok(await waitFor(() => allPaths(batches).has("sub")));
    batches.length = 0;
    for (let i = 0; i < 5; i++) await Deno.writeTextFile(`${dir}/f${i}.txt`, `v${i}`);
    await Deno.writeTextFile(`${dir}/sub/g.txt`, "g");
    assert.ok(await waitFor(() => allPaths(batches).has("sub/g.txt")));
    assert.equal(batches.length, 1, JSON.stringify(batches));
    assert.deepEqual({ ...batches[0], paths: batches[0].paths.filter((p) => p !== "sub") }, {
      paths: ["f0.txt", "f1.txt", "f2.txt", "f3.txt", "f4.txt", "sub/g.txt"],
      overflow: false,
    });
    // Deletions are reported too (the path no longer exists).
    await Deno.remove(`${dir}/f0.txt`);
    assert.ok(await waitFor(() => batches.length === 2));
    assert.deepEqual(batches[1].paths, ["f0.txt"]);
  });
});

Deno.test("watcher: a continuous stream of events still yields batches (max delay)", async () => {
  await withWatcher({ debounceMs: 100, maxDelayMs: 250, settleMs: 0 }, async (dir, batches) => {
    let during = 0;
    for (let i = 0; i < 60; i++) {
      await Deno.writeTextFile(`${dir}/stream.txt`, `tick ${i}`);
      await sleep(15);
      during = batches.length;
    }
    assert.ok(during >= 1, "a batch arrived while the stream was still going");
    assert.ok(await waitFor(() => batches.some((b) => b.paths.includes("stream.txt"))));
  });
});

Deno.test("watcher: a file still being written is held back until it settles", async () => {
  // Pauses between writes are longer than the debounce (so batches are due while the file
  // grows) and shorter than the settle window (so each due batch sees it still changing).
  await withWatcher({ debounceMs: 20, maxDelayMs: 10_000, settleMs: 300 }, async (dir, batches) => {
    const f = await Deno.open(`${dir}/growing.bin`, { write: true, create: true });
    let done = false;
    let reportedWhileWriting = false;
    try {
      for (let i = 0; i < 8; i++) {
        await f.write(new Uint8Array(1000));
        await sleep(60);
        if (allPaths(batches).has("growing.bin")) reportedWhileWriting = true;
      }
    } finally {
      f.close();
      done = true;
    }
    assert.ok(done);
    assert.ok(!reportedWhileWriting, "not reported while its size kept changing");
    assert.ok(await waitFor(() => allPaths(batches).has("growing.bin")));
  });
});

Deno.test("watcher: .filesync/ and temp files are never reported; ignore option honoured", async () => {
  await withWatcher(
    { debounceMs: 50, ignore: (p) => p.endsWith(".log") },
    async (dir, batches) => {
      await Deno.mkdir(`${dir}/.filesync`);
      await Deno.writeTextFile(`${dir}/.filesync/index.kv`, "private");
      await Deno.writeTextFile(`${dir}/.filesync-tmp-0123abcd`, "partial");
      await Deno.writeTextFile(`${dir}/app.log`, "noise");
      await Deno.writeTextFile(`${dir}/real.txt`, "real");
      assert.ok(await waitFor(() => allPaths(batches).has("real.txt")));
      await sleep(120);
      assert.deepEqual([...allPaths(batches)], ["real.txt"]);
    },
  );
});

Deno.test("watcher: the materializer's own writes are dropped, later external edits are not", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fs-watch-own-" });
  const store = await LocalStore.open(dir);
  const batches: WatchBatch[] = [];
  const w = new Watcher(store.root, (b) => {
    batches.push(b);
  }, { debounceMs: 50 });
  try {
    const base = {
      version: 1,
      root: EMPTY_FILE_ROOT,
      size: 0,
      mtime: Date.UTC(2022, 0, 1),
      deleted: false,
      origin: "A",
    };
    const dirRec: IndexRecord = { ...base, path: "d", kind: "dir", mode: 0o755 };
    const fileRec: IndexRecord = { ...base, path: "d/empty.txt", kind: "file", mode: 0o644 };
    const linkRec: IndexRecord = {
      ...base,
      path: "d/l",
      kind: "symlink",
      mode: 0o777,
      target: "x",
    };
    const sources = {
      nodes: { getNode: () => Promise.reject(new Error("not needed")) },
      fetchChunks: () => Promise.reject(new Error("not needed")),
    };
    const onWrite = w.expect.bind(w);
    for (const rec of [dirRec, fileRec, linkRec]) {
      assert.equal((await materialize(store, rec, sources, { onWrite })).status, "written");
    }
    await materialize(store, { ...linkRec, version: 2, deleted: true }, sources, { onWrite });
    await sleep(250);
    assert.deepEqual(batches, [], "own writes are not reported");
    assert.equal(w.expectedCount, 3);
    // An external edit of a path this node wrote is reported.
    await Deno.writeTextFile(`${store.root}/d/empty.txt`, "not empty any more");
    assert.ok(await waitFor(() => allPaths(batches).has("d/empty.txt")));
    assert.ok(!allPaths(batches).has("d"));
  } finally {
    await w.close();
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watcher: memory is bounded (overflow batch, capped announcements)", async () => {
  await withWatcher({ debounceMs: 100, maxPending: 5, maxExpected: 3 }, async (dir, batches, w) => {
    for (let i = 0; i < 20; i++) await Deno.writeTextFile(`${dir}/n${i}`, "x");
    assert.ok(await waitFor(() => batches.some((b) => b.overflow)));
    assert.ok(batches.every((b) => b.paths.length <= 5));
    for (let i = 0; i < 10; i++) w.expect(`p${i}`, { kind: "absent" });
    assert.equal(w.expectedCount, 3);
  });
});

Deno.test("watcher: announcements expire, re-announced ones live on", async () => {
  // Lifetimes and waits far apart: a slow machine may oversleep by up to a second.
  await withWatcher({ expectTtlMs: 2_000 }, async (_dir, _batches, w) => {
    w.expect("a", { kind: "absent" });
    w.expect("b", { kind: "absent" });
    await sleep(1_200);
    w.expect("a", { kind: "absent" }); // "a" again: now the newest
    w.expect("c", { kind: "absent" });
    await sleep(1_000);
    // "b" expired; "a" (re-announced) and "c" are within their lifetime. The sweep stops at
    // the first live entry, so it must find "b" in front of them.
    w.expect("d", { kind: "absent" });
    assert.equal(w.expectedCount, 3);
    await sleep(2_100);
    w.expect("e", { kind: "absent" });
    assert.equal(w.expectedCount, 1);
  });
});

Deno.test("watcher: close() is clean, idempotent, and stops batches", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "fs-watch-close-" }));
  const batches: WatchBatch[] = [];
  const w = new Watcher(dir, (b) => {
    batches.push(b);
  }, { debounceMs: 30, settleMs: 500 });
  try {
    // Close while a flush waits for a file to settle.
    await Deno.writeTextFile(`${dir}/a`, "x");
    await sleep(60);
    await w.close();
    await w.close();
    const n = batches.length;
    await Deno.writeTextFile(`${dir}/b`, "x");
    await sleep(100);
    assert.equal(batches.length, n);
  } finally {
    await w.close();
    await Deno.remove(dir, { recursive: true });
  }
});
