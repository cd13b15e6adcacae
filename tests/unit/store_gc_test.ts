/**
 * Pack garbage collection: chunks a current file holds are dropped from the packs, everything
 * else (other chunks, Merkle nodes, chunks whose location went stale) survives with its bytes;
 * corrupt objects are reported, not copied; a crash between steps loses nothing; reads during
 * a compaction keep working.
 */
import assert from "node:assert/strict";
import { type Hash, sha256, toHex } from "../../src/chunk/mod.ts";
import { buildFileTree } from "../../src/merkle/mod.ts";
import { KvBatch, LocalStore, MissingObjectError, PackStore } from "../../src/store/mod.ts";
import { seededBytes } from "../helpers/bytes.ts";

/** Every record in these tests takes 4 KiB with its 36-byte header. */
const RECORD = 4096;
const UNIFORM_CHUNK = RECORD - 36;
/** Three records per pack, so packs roll over after every third object. */
const SMALL_PACKS = { packTargetBytes: 3 * RECORD };

interface Fixture {
  dir: string;
  store: LocalStore;
  /** Chunks written into f.bin, with their offsets there. */
  inFile: { hash: Hash; bytes: Uint8Array; offset: number }[];
  /** Chunks only the packs hold. */
  packOnly: { hash: Hash; bytes: Uint8Array }[];
  /** Merkle nodes of the file trees. */
  nodes: Map<string, { hash: Hash; bytes: Uint8Array }>;
}

/**
 * 300 chunks in the packs, every third one not in the file, so each pack is two thirds dead
 * once f.bin holds the other 200 and the locator records them; then the Merkle nodes.
 * `size(i)` gives chunk i's length (uniform by default, so packs line up).
 */
async function fixture(
  size: (i: number) => number = () => UNIFORM_CHUNK,
  opts = SMALL_PACKS,
): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ prefix: "filesync-gc-" });
  const store = await LocalStore.open(dir, opts);
  const chunks = Array.from({ length: 300 }, (_, i) => {
    const bytes = seededBytes(10_001 + 2 * i, size(i)); // odd seeds: seed | 1 must differ
    return { hash: sha256(bytes), bytes };
  });
  for (const c of chunks) store.packs.put(c.hash, c.bytes);
  await store.packs.flush();

  const inFile: Fixture["inFile"] = [];
  const packOnly: Fixture["packOnly"] = [];
  let offset = 0;
  chunks.forEach((c, i) => {
    if (i % 3 === 2) packOnly.push(c);
    else {
      inFile.push({ ...c, offset });
      offset += c.bytes.length;
    }
  });
  const nodes = new Map<string, { hash: Hash; bytes: Uint8Array }>();
  const sink = { put: (hash: Hash, bytes: Uint8Array) => nodes.set(toHex(hash), { hash, bytes }) };
  buildFileTree(inFile.map((c) => ({ hash: c.hash, length: c.bytes.length })), sink);
  buildFileTree(chunks.map((c) => ({ hash: c.hash, length: c.bytes.length })), sink);
  for (const n of nodes.values()) store.packs.put(n.hash, n.bytes);
  await store.packs.flush();

  await Deno.writeFile(`${dir}/f.bin`, concat(inFile.map((c) => c.bytes)));
  const batch = new KvBatch(store.kv);
  for (const c of inFile) {
    await store.locator.record(batch, c.hash, {
      path: "f.bin",
      offset: c.offset,
      length: c.bytes.length,
    });
  }
  await batch.flush();
  return { dir, store, inFile, packOnly, nodes };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function withFixture(
  fn: (f: Fixture) => Promise<void>,
  size?: (i: number) => number,
): Promise<void> {
  const f = await fixture(size);
  try {
    await fn(f);
  } finally {
    await f.store.close().catch(() => {});
    await Deno.remove(f.dir, { recursive: true });
  }
}

/** Every pack-only chunk and every node is held, with the right bytes. */
async function assertLiveReadable(store: LocalStore, f: Fixture): Promise<void> {
  for (const o of [...f.packOnly, ...f.nodes.values()]) {
    assert.deepEqual(await store.packs.get(o.hash), o.bytes, `object ${toHex(o.hash)}`);
  }
}

function packFiles(dir: string): string[] {
  return [...Deno.readDirSync(`${dir}/.filesync/packs`)].map((e) => e.name).sort();
}

/** The stats of a collection that found nothing to do (and had no retained roots). */
const NOTHING_COLLECTED = {
  packsRewritten: 0,
  objectsDropped: 0,
  droppedBy: {},
  droppedHeld: 0,
  droppedUnreferenced: 0,
  unreferencedSkipped: "no retained roots given",
  bytesReclaimed: 0,
  corrupt: [],
};

Deno.test("gc: chunks a file holds leave the packs; other chunks and nodes stay", async () => {
  await withFixture(async (f) => {
    const before = await f.store.packs.diskUsage();
    const stats = await f.store.collectGarbage();
    assert.equal(stats.objectsDropped, 200);
    assert.equal(stats.droppedHeld, 200, "all by the tree rule");
    assert.deepEqual(stats.corrupt, []);
    assert.equal(stats.packsRewritten, 100, "every chunk pack was two thirds dead");
    for (const c of f.inFile) assert.equal(await f.store.packs.has(c.hash), false);
    await assertLiveReadable(f.store, f);
    // The file is now the only copy, and the locator still serves it.
    for (const c of f.inFile.slice(0, 20)) {
      assert.deepEqual(await f.store.locator.read(c.hash), c.bytes);
    }
    const after = await f.store.packs.diskUsage();
    assert.equal(before - after, stats.bytesReclaimed);
    assert.equal(stats.bytesReclaimed, 200 * RECORD);

    // Nothing left to do; and it all survives a reopen.
    const again = await f.store.collectGarbage();
    assert.deepEqual(again, NOTHING_COLLECTED);
    await f.store.close();
    f.store = await LocalStore.open(f.dir, SMALL_PACKS);
    await assertLiveReadable(f.store, f);
    for (const c of f.inFile) assert.equal(await f.store.packs.has(c.hash), false);
  });
});

Deno.test("gc: objects the caller keeps stay, although a file holds them", async () => {
  await withFixture(async (f) => {
    const pinned = new Set(f.inFile.slice(0, 15).map((c) => toHex(c.hash)));
    const stats = await f.store.collectGarbage({
      minDeadFraction: 0.1,
      keep: (h) => pinned.has(toHex(h)),
    });
    assert.equal(stats.objectsDropped, 185);
    for (const c of f.inFile.slice(0, 15)) {
      assert.deepEqual(await f.store.packs.get(c.hash), c.bytes);
    }
    for (const c of f.inFile.slice(15)) assert.equal(await f.store.packs.has(c.hash), false);
  });
});

Deno.test("gc: the pack being appended to is sealed and rewritten when mostly dead", async () => {
  // Chunks pushed before a commit, then materialized: all in the one, current pack.
  const dir = await Deno.makeTempDir({ prefix: "filesync-gc-" });
  let store = await LocalStore.open(dir);
  try {
    const chunks = Array.from({ length: 40 }, (_, i) => seededBytes(301 + 2 * i, 1000 + i * 50));
    for (const c of chunks) store.packs.put(sha256(c), c);
    await store.packs.flush();
    await Deno.writeFile(`${dir}/pushed.bin`, concat(chunks.slice(0, 30)));
    const batch = new KvBatch(store.kv);
    let offset = 0;
    for (const c of chunks.slice(0, 30)) {
      await store.locator.record(batch, sha256(c), {
        path: "pushed.bin",
        offset,
        length: c.length,
      });
      offset += c.length;
    }
    await batch.flush();
    assert.deepEqual(packFiles(dir), ["pack-000001.pack"]);

    const stats = await store.collectGarbage();
    assert.equal(stats.packsRewritten, 1);
    assert.equal(stats.objectsDropped, 30);
    assert.deepEqual(packFiles(dir), ["pack-000002.pack"]);
    for (const c of chunks.slice(0, 30)) assert.equal(await store.packs.has(sha256(c)), false);
    for (const c of chunks.slice(30)) assert.deepEqual(await store.packs.get(sha256(c)), c);
    // New objects go on in the new pack, and all survive a reopen.
    const more = seededBytes(9999, 3000);
    store.packs.put(sha256(more), more);
    await store.close();
    store = await LocalStore.open(dir);
    for (const c of [...chunks.slice(30), more]) {
      assert.deepEqual(await store.packs.get(sha256(c)), c);
    }
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gc: a pack below the dead fraction is left alone", async () => {
  await withFixture(async (f) => {
    const stats = await f.store.collectGarbage({ minDeadFraction: 0.9 });
    assert.deepEqual(stats, NOTHING_COLLECTED);
    for (const c of f.inFile) assert.equal(await f.store.packs.has(c.hash), true);
  });
});

Deno.test("gc: chunks whose location is stale (file changed or gone) stay in the packs", async () => {
  await withFixture(async (f) => {
    // Change the bytes under the first 30 located chunks, and move 10 more to a file that
    // is then deleted.
    const raw = await Deno.readFile(`${f.dir}/f.bin`);
    const changed = f.inFile.slice(0, 30);
    for (const c of changed) raw[c.offset + 7] ^= 0x55;
    await Deno.writeFile(`${f.dir}/f.bin`, raw);
    const gone = f.inFile.slice(30, 40);
    await Deno.writeFile(`${f.dir}/g.bin`, concat(gone.map((c) => c.bytes)));
    const batch = new KvBatch(f.store.kv);
    let offset = 0;
    for (const c of gone) {
      await f.store.locator.record(batch, c.hash, {
        path: "g.bin",
        offset,
        length: c.bytes.length,
      });
      offset += c.bytes.length;
    }
    await batch.flush();
    await Deno.remove(`${f.dir}/g.bin`);

    const stats = await f.store.collectGarbage({ minDeadFraction: 0.1 });
    assert.equal(stats.objectsDropped, 160);
    for (const c of [...changed, ...gone]) {
      assert.deepEqual(await f.store.packs.get(c.hash), c.bytes, "stale chunk kept");
    }
    for (const c of f.inFile.slice(40)) assert.equal(await f.store.packs.has(c.hash), false);
    await assertLiveReadable(f.store, f);
  });
});

Deno.test("gc: a corrupt object is reported and dropped, not copied; the rest survive", async () => {
  await withFixture(async (f) => {
    const victim = f.packOnly[10];
    const entry = await f.store.kv.get<{ pack: number; offset: number }>(["obj", victim.hash]);
    assert.ok(entry.value);
    const path = `${f.dir}/.filesync/packs/pack-${String(entry.value.pack).padStart(6, "0")}.pack`;
    const raw = await Deno.readFile(path);
    raw[entry.value.offset + 100] ^= 0xff;
    await Deno.writeFile(path, raw);

    const stats = await f.store.collectGarbage();
    assert.equal(stats.corrupt.length, 1);
    assert.deepEqual(stats.corrupt[0].hash, victim.hash);
    assert.match(stats.corrupt[0].message, new RegExp(toHex(victim.hash)));
    assert.equal(await f.store.packs.has(victim.hash), false, "dropped from the index");
    await assert.rejects(f.store.packs.get(victim.hash), MissingObjectError);
    assert.equal(stats.objectsDropped, 200);
    f.packOnly.splice(10, 1);
    await assertLiveReadable(f.store, f);
  });
});

for (const step of ["copied", "unindexed"] as const) {
  Deno.test(`gc: a crash after step "${step}" loses nothing; the next run finishes`, async () => {
    await withFixture(async (f) => {
      let crashedIn = -1;
      await assert.rejects(
        f.store.collectGarbage({
          onStep: (s, pack) => {
            if (s === step && pack === 5) {
              crashedIn = pack;
              throw new Error("simulated crash");
            }
          },
        }),
        /simulated crash/,
      );
      assert.equal(crashedIn, 5);
      await f.store.close();
      f.store = await LocalStore.open(f.dir, SMALL_PACKS);
      assert.ok(packFiles(f.dir).includes("pack-000005.pack"), "the old pack is still there");
      await assertLiveReadable(f.store, f);
      // Dead chunks of packs not yet rewritten are still held too.
      assert.deepEqual(await f.store.packs.get(f.inFile[199].hash), f.inFile[199].bytes);

      const stats = await f.store.collectGarbage();
      assert.deepEqual(stats.corrupt, []);
      assert.ok(!packFiles(f.dir).includes("pack-000005.pack"), "the old pack is gone now");
      for (const c of f.inFile) assert.equal(await f.store.packs.has(c.hash), false);
      await assertLiveReadable(f.store, f);
      // No duplicate left behind: the packs hold exactly the live records.
      const liveBytes = [...f.packOnly, ...f.nodes.values()]
        .reduce((n, o) => n + 36 + o.bytes.length, 0);
      assert.equal(await f.store.packs.diskUsage(), liveBytes);
    });
  });
}

Deno.test("gc: reads running during a compaction all return the right bytes", async () => {
  // Varied sizes: records straddle pack boundaries unevenly.
  await withFixture(async (f) => {
    const live = [...f.packOnly, ...f.nodes.values()];
    let done = false;
    const gc = f.store.collectGarbage({ minDeadFraction: 0.2 }).finally(() => done = true);
    let rounds = 0;
    let reads = 0;
    while (!done || rounds === 0) {
      const results = await Promise.all([
        ...live.map(async (o) => {
          assert.deepEqual(await f.store.packs.get(o.hash), o.bytes);
          reads++;
        }),
        // A dead chunk is either still readable or gone; never wrong or corrupt.
        ...f.inFile.map(async (c) => {
          try {
            assert.deepEqual(await f.store.packs.get(c.hash), c.bytes);
          } catch (e) {
            if (!(e instanceof MissingObjectError)) throw e;
          }
        }),
      ]);
      assert.equal(results.length, live.length + f.inFile.length);
      rounds++;
    }
    const stats = await gc;
    assert.ok(stats.packsRewritten > 0);
    assert.ok(reads >= live.length);
    await assertLiveReadable(f.store, f);
  }, (i) => 200 + ((i * 7919) % 6000));
});

Deno.test("gc: a read that looked up a pack compaction then deleted follows the object", async () => {
  const dir = await Deno.makeTempDir({ prefix: "filesync-gc-" });
  const kv = await Deno.openKv(`${dir}/index.kv`);
  // Index lookups (kv.get) made while `gate` is set wait for it after reading the entry:
  // the reader holds the old location while compaction moves the object and deletes the pack.
  let gate: Promise<void> | null = null;
  const slowKv = new Proxy(kv, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (prop === "get") {
        return async (key: Deno.KvKey) => {
          const entry = await target.get(key);
          if (gate) await gate;
          return entry;
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const packs = await PackStore.open(slowKv, `${dir}/packs`, SMALL_PACKS);
  try {
    const objects = Array.from({ length: 12 }, (_, i) => seededBytes(777 + 2 * i, UNIFORM_CHUNK));
    for (const o of objects) packs.put(sha256(o), o);
    await packs.flush();
    // Open pack 1's shared handle, so the late reads also exercise its closing.
    assert.deepEqual(await packs.get(sha256(objects[0])), objects[0]);
    const dead = new Set([1, 2, 4, 5].map((i) => toHex(sha256(objects[i]))));

    let open!: () => void;
    gate = new Promise((resolve) => open = resolve);
    const live = packs.get(sha256(objects[0]));
    const gone = assert.rejects(packs.get(sha256(objects[1])), MissingObjectError);
    const stats = await packs.compact((h) => Promise.resolve(dead.has(toHex(h))));
    assert.equal(stats.packsRewritten, 2);
    gate = null;
    open();
    assert.deepEqual(await live, objects[0], "the live object is read from its new pack");
    await gone;
    await assert.rejects(Deno.stat(`${dir}/packs/pack-000001.pack`), Deno.errors.NotFound);
  } finally {
    await packs.close();
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
