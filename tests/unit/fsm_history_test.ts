/**
 * The file index's history: versions kept per path, reads as of a version or a time,
 * consistent reads while a multi-commit apply is in progress, large atomic batches that survive
 * a crash half-way, labels, prunes, retained roots, snapshots with history, and the strict
 * codec of the new ops.
 */
import assert from "node:assert/strict";
import { toHex } from "../../src/chunk/mod.ts";
import {
  type Command,
  CommandDecodeError,
  decodeCommand,
  decodeSnapshot,
  encodeCommand,
  type IndexRecord,
  IndexState,
  type IndexStateOptions,
  MAX_OPS_PER_COMMAND,
  type Op,
} from "../../src/fsm/mod.ts";
import { cborDecode, cborEncode } from "../../src/wire/mod.ts";
import { all, dump, mutate, ok, rng, root, withKv } from "../helpers/fsm.ts";

function put(path: string, base = 0, n = 1): Op {
  return { op: "put", path, base, kind: "file", root: root(n), size: n, mode: 0o644, mtime: 1000 };
}
const del = (path: string, base: number): Op => ({ op: "delete", path, base });
const cmd = (ops: Op[], time?: number): Uint8Array =>
  encodeCommand({ origin: "n1", ops, ...(time === undefined ? {} : { time }) });

const brief = (r: IndexRecord | null) => r ? `${r.path}@${r.version}${r.deleted ? "x" : ""}` : null;

async function listing(s: IndexState, at?: number): Promise<string[]> {
  return (await all(s.list({ tombstones: true, at }))).map((r) => brief(r)!);
}

Deno.test("fsm history: a path's versions across put/put/delete/put, newest first", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    ok(await s.apply(1, cmd([put("a", 0, 1)], 100)));
    ok(await s.apply(2, cmd([put("a", 1, 2)], 200)));
    ok(await s.apply(3, cmd([del("a", 2)], 300)));
    ok(await s.apply(4, cmd([put("a", 0, 4)])));
    const h = await s.history("a");
    assert.deepEqual(h.map(brief), ["a@4", "a@3x", "a@2", "a@1"]);
    assert.deepEqual(h.map((r) => r.committedAt), [0, 300, 200, 100]);
    assert.deepEqual(h.map((r) => r.size), [4, 2, 2, 1]);
    assert.equal((await s.get("a"))?.committedAt, 0, "a command without time records 0");
    assert.deepEqual(await s.history("nope"), []);
  });
});

Deno.test("fsm history: get and list as of a version", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    ok(await s.apply(1, cmd([put("d/a"), put("b")])));
    ok(await s.apply(2, cmd([put("d/a", 1, 2), put("c")])));
    ok(await s.apply(3, cmd([del("b", 1)])));
    ok(await s.apply(5, cmd([{ op: "rename", from: "c", fromBase: 2, to: "d/c", toBase: 0 }])));
    assert.deepEqual(await listing(s, 0), []);
    assert.deepEqual(await listing(s, 1), ["b@1", "d@1", "d/a@1"]);
    assert.deepEqual(await listing(s, 2), ["b@1", "c@2", "d@1", "d/a@2"]);
    assert.deepEqual(await listing(s, 4), ["b@3x", "c@2", "d@1", "d/a@2"]);
    assert.deepEqual(await listing(s), ["b@3x", "c@5x", "d@1", "d/a@2", "d/c@5"]);
    assert.deepEqual(await listing(s, 99), await listing(s), "at is capped at applied");
    const live2 = await all(s.list({ at: 3, prefix: "d" }));
    assert.deepEqual(live2.map(brief), ["d/a@2"]);
    assert.equal(brief(await s.get("d/a", { at: 1 })), "d/a@1");
    assert.equal((await s.get("d/a", { at: 1 }))?.size, 1);
    assert.equal(await s.get("d/c", { at: 4 }), null);
    assert.equal(brief(await s.get("b", { at: 3 })), "b@3x");
  });
});

Deno.test("fsm history: versionAt finds the newest file-changing version at a time", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    ok(await s.apply(1, cmd([put("a")], 1000)));
    ok(await s.apply(2, cmd([put("b")], 2000)));
    assert.equal((await s.apply(3, cmd([put("b")], 2500))).ok, false, "rejected: no time");
    ok(await s.apply(4, cmd([{ op: "peer", peerId: "p", addrs: [] }], 2600)));
    ok(await s.apply(5, cmd([put("c")], 3000)));
    assert.equal(await s.versionAt(999), 0);
    assert.equal(await s.versionAt(1000), 1);
    assert.equal(await s.versionAt(2999), 2);
    assert.equal(await s.versionAt(1e13), 5);
    const at = await s.versionAt(2700);
    assert.deepEqual((await all(s.list({ at }))).map(brief), ["a@1", "b@2"]);
  });
});

Deno.test("fsm history: readers see the old tree while a multi-commit apply is paused", async () => {
  await withKv(async (kv) => {
    let pause: Promise<void> | null = null;
    let paused!: () => void;
    const reached = new Promise<void>((r) => paused = r);
    let release!: () => void;
    const opts: IndexStateOptions = {
      commitLimits: { mutations: 12 },
      afterCommit: async (n) => {
        if (pause && n === 2) {
          paused();
          await pause;
        }
      },
    };
    const s = new IndexState(kv, ["fsm"], opts);
    const ops1: Op[] = [];
    for (let i = 0; i < 20; i++) ops1.push(put(`dir/f${String(i).padStart(2, "0")}`));
    ok(await s.apply(1, cmd(ops1)));
    const before = await listing(s);
    pause = new Promise<void>((r) => release = r);
    const ops2: Op[] = [];
    for (let i = 0; i < 20; i++) {
      ops2.push(i % 2 ? put(`dir/f${String(i).padStart(2, "0")}`, 1, 2) : put(`new/g${i}`));
    }
    ops2.push(del("dir/f00", 1));
    const applying = s.apply(2, cmd(ops2));
    await reached;
    const reader = new IndexState(kv);
    assert.ok((await all(kv.list({ prefix: ["fsm", "ver", 2] }))).length > 0, "half written");
    assert.deepEqual(await listing(reader), before);
    assert.deepEqual(await listing(s), before);
    assert.equal(await reader.get("new/g0"), null);
    assert.equal(brief(await reader.get("dir/f01")), "dir/f01@1");
    assert.deepEqual((await reader.history("dir/f01")).map(brief), ["dir/f01@1"]);
    release();
    ok(await applying);
    const after = await listing(reader);
    assert.ok(after.includes("dir/f01@2") && after.includes("new/g0@2"));
    assert.ok(after.includes("dir/f00@2x"));
  });
});

/** A command of n puts spread over directories, optionally ending with a conflicting op. */
function bigCommand(n: number, prefix: string, conflictLast = false): Op[] {
  const ops: Op[] = [];
  for (let i = 0; i < n; i++) ops.push(put(`${prefix}/d${i % 50}/f${i}`, 0, i));
  if (conflictLast) ops[n - 1] = put("seed", 99);
  return ops;
}

Deno.test("fsm history: a 5,000-op command applies all or none", async () => {
  await withKv(async (kv) => {
    let commits = 0;
    const s = new IndexState(kv, ["fsm"], { afterCommit: () => void commits++ });
    ok(await s.apply(1, cmd([put("seed")])));
    const before = await dump(kv);
    commits = 0;
    const rejected = await s.apply(2, cmd(bigCommand(5000, "r", true)));
    assert.equal(!rejected.ok && rejected.code, "conflict");
    assert.equal(!rejected.ok && rejected.path, "seed");
    const afterReject = await dump(kv);
    assert.deepEqual(
      afterReject.filter(([k]) => !k.includes('"applied"')),
      before.filter(([k]) => !k.includes('"applied"')),
      "nothing written",
    );
    assert.equal(await s.applied(), 2);
    commits = 0;
    ok(await s.apply(3, cmd(bigCommand(5000, "a"), 42)));
    assert.ok(commits > 1, `took ${commits} commits`);
    const live = await all(s.list());
    assert.equal(live.length, 1 + 1 + 50 + 5000);
    assert.ok(live.every((r) => r.path === "seed" || (r.version === 3 && r.committedAt === 42)));
    assert.equal((await all(kv.list({ prefix: ["fsm", "ver", 3] }))).length, 5051);
    assert.equal(await s.versionAt(42), 3);
  });
  assert.ok(MAX_OPS_PER_COMMAND >= 50_000);
});

Deno.test("fsm history: one command of 50,000 ops fits the encoded size cap", () => {
  const ops: Op[] = [];
  for (let i = 0; i < 50_000; i++) ops.push(put(`photos/2024/img_${i}.jpg`, 0, i));
  const bytes = cmd(ops, 1);
  assert.equal(decodeCommand(bytes).ops.length, 50_000);
});

/** A history with case twins, renames, tombstones, then one multi-commit entry touching it all. */
async function prelude(s: IndexState): Promise<void> {
  ok(await s.apply(1, cmd([put("Docs/Readme.md"), put("x/a"), put("x/b"), put("gone")], 10)));
  ok(await s.apply(2, cmd([put("x/a", 1, 2), del("gone", 1)], 20)));
  ok(await s.apply(3, cmd([{ op: "label", name: "before", version: 0 }], 30)));
}

function crashOps(): Op[] {
  const ops: Op[] = [
    // Case twins in one entry: the fold key moves from one path to the other.
    del("Docs/Readme.md", 1),
    put("Docs/README.md"),
    del("x/b", 1),
    put("gone", 0, 5),
    { op: "rename", from: "x/a", fromBase: 2, to: "y/a", toBase: 0 },
    { op: "use-invite", inviteId: "inv" },
    { op: "peer", peerId: "p1", addrs: ["/ip4/1.2.3.4"] },
    { op: "label", name: "crash", version: 2 },
  ];
  for (let i = 0; i < 40; i++) ops.push(put(`z/${i % 7}/f${i}`, 0, i));
  return ops;
}

Deno.test("fsm history: a crash half-way, then re-delivery, equals one clean apply", async () => {
  const limits = { mutations: 15 };
  const clean = await withKv(async (kv) => {
    const s = new IndexState(kv, ["fsm"], { commitLimits: limits });
    await prelude(s);
    ok(await s.apply(4, cmd(crashOps(), 40)));
    return { dump: await dump(kv), snap: toHex(await s.snapshot()) };
  });
  let commitsOfEntry = 0;
  await withKv(async (kv) => {
    const s = new IndexState(kv, ["fsm"], {
      commitLimits: limits,
      afterCommit: (_n, index) => void (index === 4 && commitsOfEntry++),
    });
    await prelude(s);
    ok(await s.apply(4, cmd(crashOps(), 40)));
  });
  assert.ok(commitsOfEntry >= 5, `entry took ${commitsOfEntry} commits`);
  for (let k = 1; k < commitsOfEntry; k++) {
    await withKv(async (kv) => {
      const crashing = new IndexState(kv, ["fsm"], {
        commitLimits: limits,
        afterCommit: (n, index) => {
          if (index === 4 && n === k) throw new Error("simulated crash");
        },
      });
      await prelude(crashing);
      await assert.rejects(crashing.apply(4, cmd(crashOps(), 40)), /simulated crash/);
      assert.equal(await crashing.applied(), 3);
      // The half-written entry is invisible to readers.
      assert.equal(brief(await crashing.get("Docs/Readme.md")), "Docs/Readme.md@1", `k=${k}`);
      const restarted = new IndexState(kv, ["fsm"], { commitLimits: limits });
      ok(await restarted.apply(4, cmd(crashOps(), 40)));
      assert.deepEqual(await dump(kv), clean.dump, `crash after commit ${k}`);
      assert.equal(toHex(await restarted.snapshot()), clean.snap);
    });
  }
});

Deno.test("fsm history: undo after a crash of a 5,000-op entry, on the same instance", async () => {
  let crash = true;
  const clean = await withKv(async (kv) => {
    const s = new IndexState(kv);
    ok(await s.apply(1, cmd([put("seed")])));
    ok(await s.apply(2, cmd(bigCommand(5000, "a"))));
    return await dump(kv);
  });
  await withKv(async (kv) => {
    const s = new IndexState(kv, ["fsm"], {
      afterCommit: (n, index) => {
        if (crash && index === 2 && n === 3) throw new Error("simulated crash");
      },
    });
    ok(await s.apply(1, cmd([put("seed")])));
    await assert.rejects(s.apply(2, cmd(bigCommand(5000, "a"))));
    assert.deepEqual((await all(s.list())).map(brief), ["seed@1"]);
    crash = false;
    ok(await s.apply(2, cmd(bigCommand(5000, "a"))));
    assert.deepEqual(await dump(kv), clean);
    assert.equal(await s.undoUnapplied(), 0);
  });
});

Deno.test("fsm history: labels are created once, listed, removed, and checked", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    ok(await s.apply(1, cmd([put("a")])));
    ok(await s.apply(2, cmd([{ op: "label", name: "v1", version: 0 }], 777)));
    assert.deepEqual(await s.label("v1"), { name: "v1", version: 1, time: 777 });
    const dup = await s.apply(3, cmd([{ op: "label", name: "v1", version: 2 }]));
    assert.equal(!dup.ok && dup.code, "label-exists");
    assert.equal(!dup.ok && dup.current, 1);
    const twice = await s.apply(
      4,
      cmd([
        { op: "label", name: "t", version: 1 },
        { op: "label", name: "t", version: 2 },
      ]),
    );
    assert.equal(!twice.ok && twice.code, "label-exists");
    const future = await s.apply(5, cmd([{ op: "label", name: "f", version: 5 }]));
    assert.equal(!future.ok && future.code, "invalid");
    ok(await s.apply(6, cmd([{ op: "label", name: "ünïcode label", version: 3 }])));
    assert.deepEqual((await s.labels()).map((l) => `${l.name}=${l.version}`), [
      "v1=1",
      "ünïcode label=3",
    ]);
    ok(await s.apply(7, cmd([{ op: "unlabel", name: "v1" }])));
    // Removing an absent label is a no-op.
    ok(await s.apply(8, cmd([{ op: "unlabel", name: "v1" }])));
    assert.equal(await s.label("v1"), null);
    ok(await s.apply(9, cmd([{ op: "label", name: "v1", version: 0 }])));
    assert.equal((await s.label("v1"))?.version, 8);
    const mixed = await s.apply(
      10,
      cmd([put("b"), { op: "prune", keepVersions: 1, keepMs: 0, now: 0 }]),
    );
    assert.equal(!mixed.ok && mixed.code, "invalid");
    assert.equal(await s.get("b"), null);
  });
});

/** History versions of every path, as "path: v1 v2 ...", newest first. */
async function histories(s: IndexState): Promise<string[]> {
  const out: string[] = [];
  for await (const r of s.list({ tombstones: true })) {
    out.push(`${r.path}: ${(await s.history(r.path)).map((h) => h.version).join(" ")}`);
  }
  return out;
}

/** a: versions 1..5 at t=1000..5000; t: created 1 (t=1000), deleted 2 (t=2000); u: tombstone at 5. */
async function pruneFixture(s: IndexState): Promise<void> {
  ok(await s.apply(1, cmd([put("a", 0, 1), put("t", 0, 100), put("u", 0, 200)], 1000)));
  ok(await s.apply(2, cmd([put("a", 1, 2), del("t", 1)], 2000)));
  ok(await s.apply(3, cmd([put("a", 2, 3)], 3000)));
  ok(await s.apply(4, cmd([put("a", 3, 4)], 4000)));
  ok(await s.apply(5, cmd([put("a", 4, 5), del("u", 1)], 5000)));
}

const prune = (keepVersions: number, keepMs: number, now: number): Op => ({
  op: "prune",
  keepVersions,
  keepMs,
  now,
});

Deno.test("fsm history: prune keeps heads, the newest N, the time window and labels", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    await pruneFixture(s);
    assert.deepEqual(await histories(s), ["a: 5 4 3 2 1", "t: 2 1", "u: 5 1"]);
    // Newest 2 per path, and the window [3500, ...]: a keeps 4 and 5, and 3, which was
    // current when the window starts; t and u keep both.
    assert.equal(await s.horizon(), 0);
    const r = await s.apply(6, cmd([prune(2, 1500, 5000)]));
    assert.deepEqual(r, { ok: true, version: 6, pruned: 2 });
    assert.deepEqual(await histories(s), ["a: 5 4 3", "t: 2 1", "u: 5 1"]);
    // Versions 1 and 2 of a are gone: trees before version 3 are no longer exact.
    assert.equal(await s.horizon(), 3);
    // Heads only, window [4500, ...]: t's old tombstone goes too (with its history); u keeps
    // version 1, current when the window starts (deleted only at 5000).
    const r2 = await s.apply(7, cmd([prune(1, 500, 5000)]));
    assert.deepEqual(r2, { ok: true, version: 7, pruned: 1 + 2 });
    assert.deepEqual(await histories(s), ["a: 5 4", "u: 5 1"]);
    assert.equal(await s.get("t"), null);
    assert.equal((await s.get("u"))?.deleted, true);
    assert.equal(await s.horizon(), 4);
    // Every version from the horizon on reads exactly as it was committed.
    assert.deepEqual(await listing(s, 4), ["a@4", "u@1"]);
    const snap = await s.snapshot();
    await withKv(async (kv2) => {
      const copy = new IndexState(kv2);
      await copy.restore(snap);
      assert.equal(await copy.horizon(), 4, "snapshots carry the horizon");
    });
  });
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    await pruneFixture(s);
    ok(await s.apply(6, cmd([{ op: "label", name: "keep-2", version: 2 }])));
    ok(await s.apply(7, cmd([{ op: "label", name: "keep-3", version: 3 }])));
    ok(await s.apply(8, cmd([prune(1, 0, 1e9)])));
    // a@2 and a@3 pinned; t's tombstone (2) is needed by both labels; u@1 by both too.
    assert.deepEqual(await histories(s), ["a: 5 3 2", "t: 2", "u: 5 1"]);
    assert.deepEqual((await all(s.list({ at: 2 }))).map(brief), ["a@2", "u@1"]);
    ok(
      await s.apply(9, cmd([{ op: "unlabel", name: "keep-2" }, { op: "unlabel", name: "keep-3" }])),
    );
    ok(await s.apply(10, cmd([prune(1, 0, 1e9)])));
    assert.deepEqual(await histories(s), ["a: 5"], "old tombstones go once nothing pins them");
  });
});

Deno.test("fsm history: a prune re-delivered after a crash half-way converges", async () => {
  const limits = { mutations: 4 };
  const clean = await withKv(async (kv) => {
    const s = new IndexState(kv, ["fsm"], { commitLimits: limits });
    await pruneFixture(s);
    ok(await s.apply(6, cmd([prune(1, 0, 1e9)])));
    return await dump(kv);
  });
  await withKv(async (kv) => {
    const s = new IndexState(kv, ["fsm"], {
      commitLimits: limits,
      afterCommit: (n, index) => {
        if (index === 6 && n === 2) throw new Error("simulated crash");
      },
    });
    await pruneFixture(s);
    await assert.rejects(s.apply(6, cmd([prune(1, 0, 1e9)])));
    const again = new IndexState(kv, ["fsm"], { commitLimits: limits });
    ok(await again.apply(6, cmd([prune(1, 0, 1e9)])));
    assert.deepEqual(await dump(kv), clean);
  });
});

Deno.test("fsm history: retainedRoots lists the live file content of retained versions", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    await pruneFixture(s);
    const roots = async () => (await all(s.retainedRoots())).map(toHex).sort();
    const of = (...ns: number[]) => ns.map((n) => toHex(root(n))).sort();
    // t's and u's tombstones carry their old root but are not content.
    assert.deepEqual(await roots(), of(1, 2, 3, 4, 5, 100, 200));
    ok(await s.apply(6, cmd([prune(2, 0, 1e9)])));
    assert.deepEqual(await roots(), of(4, 5, 100, 200));
    ok(await s.apply(7, cmd([prune(1, 0, 1e9)])));
    assert.deepEqual(await roots(), of(5));
  });
});

Deno.test("fsm history: snapshots carry history, times and labels; v1 still decodes", async () => {
  await withKv(async (kvA) =>
    await withKv(async (kvB) => {
      const a = new IndexState(kvA);
      await pruneFixture(a);
      ok(await a.apply(6, cmd([{ op: "label", name: "L", version: 3 }], 6000)));
      ok(await a.apply(7, cmd([{ op: "use-invite", inviteId: "i" }])));
      const snap = await a.snapshot();
      const b = new IndexState(kvB);
      ok(await b.apply(1, cmd([put("stale")])));
      await b.restore(snap);
      assert.equal(toHex(await b.snapshot()), toHex(snap));
      assert.deepEqual(await dump(kvB), await dump(kvA));
      assert.deepEqual(await b.history("a"), await a.history("a"));
      assert.deepEqual(await b.labels(), [{ name: "L", version: 3, time: 6000 }]);
      assert.equal(await b.versionAt(3500), 3);
      assert.equal(await b.inviteUsed("i"), true);
      // Applying continues from the snapshot.
      ok(await b.apply(8, cmd([put("a", 5, 9)])));
      assert.equal((await b.history("a")).length, 6);
      const dup = await b.apply(9, cmd([{ op: "label", name: "L", version: 0 }]));
      assert.equal(!dup.ok && dup.code, "label-exists");

      // A version-1 snapshot (before history existed) restores as heads only.
      const v1 = cborEncode([1, 4, [["p", ["/x"]]], ["inv"], [
        ["f", 3, 0, root(1), 1, 0o644, 1000, "", false, "n1"],
        ["g", 4, 0, root(2), 2, 0o644, 1000, "", true, "n2"],
      ]]);
      const decoded = decodeSnapshot(v1);
      assert.deepEqual(decoded.history, []);
      assert.deepEqual(decoded.labels, []);
      assert.equal(decoded.records[0].committedAt, 0);
      await b.restore(v1);
      assert.deepEqual((await b.history("f")).map(brief), ["f@3"]);
      assert.deepEqual(await listing(b), ["f@3", "g@4x"]);
      assert.deepEqual(await b.labels(), []);
      ok(await b.apply(5, cmd([put("f", 3, 7)])));
      assert.deepEqual((await b.history("f")).map(brief), ["f@5", "f@3"]);
    })
  );
});

Deno.test("fsm history: heads written before history existed are backfilled", async () => {
  await withKv(async (kv) => {
    const { path: _, ...stored } = {
      path: "old",
      version: 1,
      kind: "file" as const,
      root: root(1),
      size: 1,
      mode: 0o644,
      mtime: 1,
      deleted: false,
      origin: "n1",
    };
    await kv.set(["fsm", "rec", "old"], stored);
    await kv.set(["fsm", "fold", "old"], "old");
    await kv.set(["fsm", "applied"], 1);
    const s = new IndexState(kv);
    assert.equal((await s.get("old"))?.committedAt, 0);
    ok(await s.apply(2, cmd([put("old", 1, 2)])));
    assert.deepEqual((await s.history("old")).map(brief), ["old@2", "old@1"]);
    assert.equal(brief(await s.get("old", { at: 1 })), "old@1");
  });
});

Deno.test("fsm history: the codec carries the time and the new ops, strictly", () => {
  const c: Command = {
    origin: "n1",
    time: 1_700_000_000_000,
    ops: [
      { op: "label", name: "release 1", version: 7 },
      { op: "unlabel", name: "old" },
      { op: "prune", keepVersions: 3, keepMs: 86_400_000, now: 1_700_000_000_000 },
    ],
  };
  assert.deepEqual(decodeCommand(encodeCommand(c)), c);
  // A command from an older node has no time element.
  const old = cborEncode([1, "n1", [[3, "a", 1]]]);
  assert.deepEqual(decodeCommand(old), { origin: "n1", ops: [del("a", 1)], time: 0 });
  const bad: [unknown, RegExp][] = [
    [[1, "n1", [[3, "a", 1]], -1], /command\.time/],
    [[1, "n1", [[3, "a", 1]], 1.5], /command\.time/],
    [[1, "n1", [[3, "a", 1]], "1"], /command\.time/],
    [[1, "n1", [[3, "a", 1]], 1, 2], /command must be an array/],
    [[1, "n1", [[7, "", 1]]], /ops\[0\]\.name/],
    [[1, "n1", [[7, "x".repeat(129), 1]]], /ops\[0\]\.name/],
    [[1, "n1", [[7, "a\nb", 1]]], /ops\[0\]\.name must not contain control/],
    [[1, "n1", [[7, "a\u0085b", 1]]], /ops\[0\]\.name/],
    [[1, "n1", [[7, "a", -1]]], /ops\[0\]\.version/],
    [[1, "n1", [[7, "a"]]], /ops\[0\] must be an array of 3/],
    [[1, "n1", [[8, 5]]], /ops\[0\]\.name/],
    [[1, "n1", [[9, 0, 1, 1]]], /ops\[0\]\.keepVersions/],
    [[1, "n1", [[9, 1, -1, 1]]], /ops\[0\]\.keepMs/],
    [[1, "n1", [[9, 1, 1, null]]], /ops\[0\]\.now/],
    [[1, "n1", [[9, 1, 1]]], /ops\[0\] must be an array of 4/],
    [[1, "n1", [[12, 1]]], /unknown op tag/],
  ];
  for (const [wire, re] of bad) {
    assert.throws(() => decodeCommand(cborEncode(wire)), (e: Error) => {
      assert.ok(e instanceof CommandDecodeError, e.message);
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test("fsm history: mutated commands and snapshots fail only with CommandDecodeError", async () => {
  const good = encodeCommand({
    origin: "n1",
    time: 5,
    ops: [
      { op: "label", name: "l", version: 1 },
      { op: "unlabel", name: "m" },
      { op: "prune", keepVersions: 1, keepMs: 2, now: 3 },
    ],
  });
  const snap = await withKv(async (kv) => {
    const s = new IndexState(kv);
    await pruneFixture(s);
    ok(await s.apply(6, cmd([{ op: "label", name: "L", version: 3 }], 6000)));
    return await s.snapshot();
  });
  assert.ok(Array.isArray(cborDecode(snap)));
  const rand = rng(5);
  for (
    const [what, bytes0, decode] of [
      ["command", good, decodeCommand],
      ["snapshot", snap, decodeSnapshot],
    ] as const
  ) {
    let rejected = 0;
    for (let i = 0; i < 5_000; i++) {
      const bytes = mutate(bytes0, rand);
      try {
        decode(bytes);
      } catch (e) {
        assert.ok(e instanceof CommandDecodeError, `${what}: ${(e as Error).message}`);
        rejected++;
      }
    }
    assert.ok(rejected > 1_000, `${what}: ${rejected} rejected`);
  }
});
