/**
 * The local store: pack files round-trip and detect corruption, the chunk locator never serves
 * bytes that no longer match, KV batches respect Deno KV's limits, snapshots resolve by label.
 */
import assert from "node:assert/strict";
import { sha256, toHex } from "../../src/chunk/mod.ts";
import {
  CorruptObjectError,
  KvBatch,
  LocalStore,
  MissingObjectError,
  StaleLocationError,
  UnknownSnapshotError,
} from "../../src/store/mod.ts";
import { seededBytes } from "../helpers/bytes.ts";

const bytesOf = seededBytes;

async function withStore(fn: (dir: string, store: LocalStore) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "filesync-store-" });
  const store = await LocalStore.open(dir);
  try {
    await fn(dir, store);
  } finally {
    await store.close().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("packs: objects round-trip, survive a reopen, and live in pack files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "filesync-store-" });
  try {
    const objects = Array.from({ length: 300 }, (_, i) => bytesOf(i + 1, 100 + i * 37));
    let store = await LocalStore.open(dir);
    for (const o of objects) store.packs.put(sha256(o), o);
    // Readable before the flush, from memory.
    assert.deepEqual(await store.packs.get(sha256(objects[5])), objects[5]);
    await store.close();
    store = await LocalStore.open(dir);
    for (const o of objects) assert.deepEqual(await store.packs.get(sha256(o)), o);
    assert.equal(await store.packs.has(sha256(new Uint8Array([1, 2, 3]))), false);
    await assert.rejects(store.packs.get(sha256(new Uint8Array([9]))), MissingObjectError);
    await store.close();
    const packFiles = [...Deno.readDirSync(`${dir}/.filesync/packs`)].map((e) => e.name);
    assert.deepEqual(packFiles, ["pack-000001.pack"], "300 objects share one pack file");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("packs: a corrupt pack is detected and never served", async () => {
  await withStore(async (dir, store) => {
    const a = bytesOf(7, 5000);
    const b = bytesOf(8, 5000);
    store.packs.put(sha256(a), a);
    store.packs.put(sha256(b), b);
    await store.packs.flush();
    // Flip one byte in the middle of the second object's payload.
    const path = `${dir}/.filesync/packs/pack-000001.pack`;
    const raw = await Deno.readFile(path);
    raw[raw.length - 2500] ^= 0xff;
    await Deno.writeFile(path, raw);
    await store.close();
    const reopened = await LocalStore.open(dir);
    try {
      assert.deepEqual(await reopened.packs.get(sha256(a)), a);
      await assert.rejects(reopened.packs.get(sha256(b)), (e) => {
        assert.ok(e instanceof CorruptObjectError);
        assert.match(e.message, new RegExp(toHex(sha256(b))));
        return true;
      });
      // A truncated pack is corrupt too.
      await Deno.truncate(path, 100);
      await assert.rejects(reopened.packs.get(sha256(b)), CorruptObjectError);
    } finally {
      await reopened.close();
    }
  });
});

Deno.test("packs: putVerified refuses bytes that do not match their hash", async () => {
  await withStore(async (_dir, store) => {
    const a = bytesOf(3, 100);
    assert.throws(() => store.packs.putVerified(sha256(bytesOf(4, 100)), a), CorruptObjectError);
    assert.equal(await store.packs.has(sha256(bytesOf(4, 100))), false);
  });
});

Deno.test("locator: reads verify; a file changed or removed behind its back is an error", async () => {
  await withStore(async (dir, store) => {
    const content = bytesOf(11, 10_000);
    await Deno.writeFile(`${dir}/f.bin`, content);
    const chunk = content.subarray(2000, 6000);
    const hash = sha256(chunk);
    const batch = new KvBatch(store.kv);
    await store.locator.record(batch, hash, { path: "f.bin", offset: 2000, length: 4000 });
    await batch.flush();
    assert.deepEqual(await store.locator.read(hash), chunk);
    assert.equal(await store.locator.read(sha256(new Uint8Array([1]))), null);

    const changed = content.slice();
    changed[3000] ^= 1;
    await Deno.writeFile(`${dir}/f.bin`, changed);
    await assert.rejects(store.locator.read(hash), (e) => {
      assert.ok(e instanceof StaleLocationError);
      assert.match(e.message, new RegExp(toHex(hash)));
      return true;
    });
    await Deno.writeFile(`${dir}/f.bin`, content.subarray(0, 3000));
    await assert.rejects(store.locator.read(hash), StaleLocationError);
    await Deno.remove(`${dir}/f.bin`);
    await assert.rejects(store.locator.read(hash), StaleLocationError);

    // Reads keep a few handles open; a fresh read sees the path as it is now, so a file
    // deleted after a cached read is not taken for a copy of its chunks (GC relies on this).
    await Deno.writeFile(`${dir}/f.bin`, content);
    assert.deepEqual(await store.locator.read(hash), chunk);
    await Deno.remove(`${dir}/f.bin`);
    await assert.rejects(store.locator.read(hash, { fresh: true }), StaleLocationError);
  });
});

Deno.test("KvBatch: thousands of mutations commit across several atomic operations", async () => {
  await withStore(async (_dir, store) => {
    const batch = new KvBatch(store.kv);
    await Promise.all(
      Array.from({ length: 2500 }, (_, i) => batch.set(["t", i], { v: "x".repeat(200) })),
    );
    await batch.flush();
    // 2,500 mutations cannot fit in one commit (Deno KV allows 1,000).
    assert.ok(batch.commits >= 3, `expected several commits, got ${batch.commits}`);
    let n = 0;
    for await (const _ of store.kv.list({ prefix: ["t"] })) n++;
    assert.equal(n, 2500);
    await assert.rejects(batch.set(["big"], new Uint8Array(70_000)), RangeError);
  });
});

Deno.test("KvBatch: a full operation commits in the background while the next fills, in order", async () => {
  await withStore(async (_dir, store) => {
    // The first commit's hook waits until released: sets go on meanwhile, up to one more
    // full operation, and the second commit starts only after the first ended.
    let release!: () => void;
    const held = new Promise<void>((r) => release = r);
    const hookCalls: number[] = [];
    const batch = new KvBatch(store.kv, async () => {
      hookCalls.push(hookCalls.length);
      if (hookCalls.length === 1) await held;
    });
    for (let i = 0; i < 1200; i++) await batch.set(["o", i], i);
    assert.deepEqual(hookCalls, [0], "the first full operation is committing");
    assert.equal(batch.commits, 0, "and has not committed yet");
    // A second full operation waits for the first commit.
    let secondDone = false;
    const second = (async () => {
      for (let i = 1200; i < 2000; i++) await batch.set(["o", i], i);
      secondDone = true;
    })();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(secondDone, false, "a second full operation waits for the first commit");
    release();
    await second;
    await batch.flush();
    assert.ok(batch.commits >= 3, `commits: ${batch.commits}`);
    let n = 0;
    for await (const e of store.kv.list<number>({ prefix: ["o"] })) {
      assert.equal(e.value, e.key[1]);
      n++;
    }
    assert.equal(n, 2000);
  });
});

Deno.test("KvBatch: after a failed commit nothing later is committed and every call rejects", async () => {
  await withStore(async (_dir, store) => {
    let calls = 0;
    const batch = new KvBatch(store.kv, () => {
      calls++;
      return calls === 2 ? Promise.reject(new Error("disk full")) : Promise.resolve();
    });
    // Operations of about 900 mutations: the second one's commit fails in the background.
    const failure = (async () => {
      for (let i = 0; i < 3000; i++) await batch.set(["f", i], i);
    })();
    await assert.rejects(failure, /disk full/);
    await assert.rejects(batch.set(["f", "late"], 1), /disk full/);
    await assert.rejects(batch.flush(), /disk full/);
    // Only the first operation landed: what was queued after the failure is not committed.
    let n = 0;
    for await (const _ of store.kv.list({ prefix: ["f"] })) n++;
    assert.equal(batch.commits, 1);
    assert.ok(n > 0 && n < 1000, `committed: ${n}`);
  });
});

Deno.test("snapshots: unique labels, lookup by label or id, clear error otherwise", async () => {
  await withStore(async (_dir, store) => {
    const root = sha256(new Uint8Array([1]));
    const a = await store.snapshots.create({ label: "v1", root, time: 1000, files: 1, bytes: 2 });
    const b = await store.snapshots.create({ root, time: 2000, files: 3, bytes: 4 });
    assert.equal((await store.snapshots.resolve("v1")).id, a.id);
    assert.equal((await store.snapshots.resolve(b.id)).id, b.id);
    assert.deepEqual((await store.snapshots.list()).map((s) => s.id), [a.id, b.id]);
    await assert.rejects(
      store.snapshots.create({ label: "v1", root, time: 3000, files: 0, bytes: 0 }),
      /exists already/,
    );
    await assert.rejects(
      store.snapshots.create({ label: "../x", root, time: 3000, files: 0, bytes: 0 }),
      RangeError,
    );
    await assert.rejects(store.snapshots.resolve("nope"), UnknownSnapshotError);
  });
});

Deno.test("packs: many concurrent reads of one pack each get their own object", async () => {
  await withStore(async (_dir, store) => {
    const objects = Array.from({ length: 200 }, (_, i) => bytesOf(1000 + i, 50 + (i * 97) % 4000));
    for (const o of objects) store.packs.put(sha256(o), o);
    await store.packs.flush();
    const got = await Promise.all(objects.map((o) => store.packs.get(sha256(o))));
    got.forEach((g, i) => assert.deepEqual(g, objects[i]));
  });
});

Deno.test("readObject/holds: tree first, then packs (pending or flushed), many at once", async () => {
  await withStore(async (dir, store) => {
    const content = bytesOf(21, 8_000);
    await Deno.writeFile(`${dir}/f.bin`, content);
    const inTree = content.subarray(0, 4000);
    const batch = new KvBatch(store.kv);
    await store.locator.record(batch, sha256(inTree), { path: "f.bin", offset: 0, length: 4000 });
    await batch.flush();
    // 40 packed objects, half flushed and half still pending, plus the tree's chunk.
    const packed = Array.from({ length: 40 }, (_, i) => bytesOf(100 + i, 500 + i));
    packed.slice(0, 20).forEach((b) => store.packs.put(sha256(b), b));
    await store.packs.flush();
    packed.slice(20).forEach((b) => store.packs.put(sha256(b), b));
    const absent = sha256(new Uint8Array([9, 9]));
    // Asked for all in one tick, so they are looked up in batches of five.
    const all = [inTree, ...packed];
    const got = await Promise.all(all.map((b) => store.readObject(sha256(b))));
    got.forEach((b, i) => assert.deepEqual(b, all[i]));
    assert.equal(await store.readObject(absent), null);
    const held = await Promise.all(
      [...all.map((b) => sha256(b)), absent].map((h) => store.holds(h)),
    );
    assert.deepEqual(held, [...all.map(() => true), false]);
    // A chunk whose file changed, but that the packs also hold, is served from the packs.
    store.packs.put(sha256(inTree), inTree);
    await Deno.writeFile(`${dir}/f.bin`, bytesOf(22, 8_000));
    assert.deepEqual(await store.readObject(sha256(inTree)), inTree);
  });
});

Deno.test("packs: flushOnly writes just those objects and leaves the rest pending", async () => {
  await withStore(async (_dir, store) => {
    const pushed = bytesOf(701, 200_000);
    const node = bytesOf(703, 300);
    store.packs.put(sha256(pushed), pushed);
    store.packs.put(sha256(node), node);
    await store.packs.flushOnly([sha256(node)]);
    assert.equal(store.packs.hasPending(sha256(node)), false);
    assert.equal(store.packs.hasPending(sha256(pushed)), true, "the other object was not written");
    // Behind a running flush of everything: it waits for it, then has nothing left to write.
    const other = bytesOf(705, 1000);
    store.packs.put(sha256(other), other);
    const all = store.packs.flush();
    await new Promise((r) => setTimeout(r, 0));
    await store.packs.flushOnly([sha256(other)]);
    assert.equal(store.packs.hasPending(sha256(other)), false);
    await all;
    assert.equal(store.packs.hasPending(sha256(pushed)), false);
    for (const o of [pushed, node, other]) assert.deepEqual(await store.packs.get(sha256(o)), o);
  });
});

Deno.test("packs: flush(hashes) makes those durable, joins a running flush, and many share one", async () => {
  await withStore(async (_dir, store) => {
    const a = bytesOf(501, 40_000);
    const b = bytesOf(502, 50_000);
    store.packs.put(sha256(a), a);
    // Not accepted here: nothing to wait for.
    await store.packs.flush([sha256(bytesOf(503, 10))]);
    assert.equal(store.packs.hasPending(sha256(a)), true);
    // A flush of everything is running when b arrives; waiting for a joins it, b needs the next.
    const all = store.packs.flush();
    await new Promise((r) => setTimeout(r, 0)); // it has started: it took a, not b
    store.packs.put(sha256(b), b);
    let bWhenA: boolean | null = null;
    await Promise.all([
      store.packs.flush([sha256(a)]).then(() => bWhenA = store.packs.hasPending(sha256(b))),
      store.packs.flush([sha256(b)]),
      all,
    ]);
    assert.equal(bWhenA, true, "a was durable with the running flush, before b's flush ended");
    assert.equal(store.packs.hasPending(sha256(a)), false);
    assert.equal(store.packs.hasPending(sha256(b)), false);
    // Thirty waiting at once for objects of one batch: one more flush, not thirty.
    const more = Array.from({ length: 30 }, (_, i) => bytesOf(2 * (600 + i) + 1, 1_000));
    for (const o of more) store.packs.put(sha256(o), o);
    const packs = `${store.root}/.filesync/packs`;
    const size = () =>
      [...Deno.readDirSync(packs)].reduce(
        (n, e) => n + Deno.statSync(`${packs}/${e.name}`).size,
        0,
      );
    const before = size();
    await Promise.all(more.map((o) => store.packs.flush([sha256(o)])));
    assert.ok(more.every((o) => !store.packs.hasPending(sha256(o))));
    assert.equal(size() - before, more.reduce((n, o) => n + o.length + 36, 0), "each stored once");
    for (const o of [a, b, ...more]) assert.deepEqual(await store.packs.get(sha256(o)), o);
  });
});
