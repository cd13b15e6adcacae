/** Restore planning (src/sync/restore.ts): an old state of a path committed as a new version. */
import assert from "node:assert/strict";
import { sha256 } from "../../src/chunk/mod.ts";
import { encodeCommand, type FileOp, IndexState, type Op } from "../../src/fsm/mod.ts";
import { planRestore } from "../../src/sync/mod.ts";

const root = (s: string) => sha256(new TextEncoder().encode(s));

function put(path: string, base: number, content: string): FileOp {
  return {
    op: "put",
    path,
    base,
    kind: "file",
    root: root(content),
    size: content.length,
    mode: 0o644,
    mtime: 1,
  };
}

async function withIndex(
  fn: (s: IndexState, run: (...ops: Op[]) => Promise<number>) => Promise<void>,
) {
  const kv = await Deno.openKv(":memory:");
  const s = new IndexState(kv);
  let index = 0;
  try {
    await fn(s, async (...ops) => {
      const r = await s.apply(++index, encodeCommand({ origin: "n", ops, time: index }));
      assert.ok(r.ok, JSON.stringify(r));
      return r.version;
    });
  } finally {
    kv.close();
  }
}

const describe = (ops: FileOp[]) =>
  ops.map((o) => `${o.op} ${"path" in o ? o.path : ""}@${"base" in o ? o.base : ""}`);

Deno.test("restore: a file goes back to its old root on top of the current version", async () => {
  await withIndex(async (s, run) => {
    const v1 = await run(put("a.txt", 0, "one"));
    const v2 = await run(put("a.txt", v1, "two"));
    const ops = await planRestore(s, "a.txt", v1);
    assert.deepEqual(describe(ops), [`put a.txt@${v2}`]);
    const p = ops[0];
    assert.ok(p.op === "put" && p.root.every((b, i) => b === root("one")[i]));
    assert.deepEqual(await planRestore(s, "a.txt", v2), [], "already as it was");
  });
});

Deno.test("restore: a deleted file comes back; a file that did not exist yet goes", async () => {
  await withIndex(async (s, run) => {
    const v1 = await run(put("a.txt", 0, "one"));
    await run({ op: "delete", path: "a.txt", base: v1 });
    assert.deepEqual(describe(await planRestore(s, "a.txt", v1)), ["put a.txt@0"]);
    const v3 = await run(put("b.txt", 0, "b"));
    assert.deepEqual(describe(await planRestore(s, "b.txt", v1)), [`delete b.txt@${v3}`]);
    await assert.rejects(planRestore(s, "never.txt", v1), /did not exist/);
  });
});

Deno.test("restore: a directory tree comes back whole, newer entries deleted deepest first", async () => {
  await withIndex(async (s, run) => {
    await run(put("d/x", 0, "x1"), put("d/y", 0, "y1"));
    const v1 = await s.applied();
    const x2 = await run(put("d/x", (await s.get("d/x"))!.version, "x2"));
    const z = await run(put("d/sub/z", 0, "z"));
    await run({ op: "delete", path: "d/y", base: (await s.get("d/y"))!.version });
    const ops = await planRestore(s, "d", v1);
    assert.deepEqual(describe(ops), [
      `delete d/sub/z@${z}`,
      `delete d/sub@${z}`,
      `put d/x@${x2}`,
      "put d/y@0",
    ]);
  });
});

Deno.test("resolveVersion: labels, version numbers and times; unknown names are clear", async () => {
  const { resolveVersion, VersionError } = await import("../../src/sync/mod.ts");
  await withIndex(async (s, run) => {
    const v1 = await run(put("a", 0, "1")); // committed at time 1 (withIndex uses the index)
    const v2 = await run(put("a", v1, "2")); // time 2
    await s.apply(
      3,
      encodeCommand({ origin: "n", ops: [{ op: "label", name: "rel", version: v1 }] }),
    );
    let barriers = 0;
    const barrier = () => {
      barriers++;
      return Promise.resolve();
    };
    assert.equal(await resolveVersion(s, "", barrier), 3);
    assert.equal(barriers, 1, "the latest needs a read barrier");
    assert.equal(await resolveVersion(s, "rel", barrier), v1);
    assert.equal(await resolveVersion(s, String(v2), barrier), v2);
    assert.equal(await resolveVersion(s, new Date(1).toISOString(), barrier), v1);
    assert.equal(await resolveVersion(s, new Date(5).toISOString(), barrier), v2);
    for (const bad of ["99", "nonsense", new Date(0).toISOString()]) {
      await assert.rejects(resolveVersion(s, bad, barrier), VersionError);
    }
    const failing = () => Promise.reject(new Error("no leader"));
    await assert.rejects(
      resolveVersion(s, "", failing),
      (e: unknown) => e instanceof VersionError && e.code === "no-quorum",
    );
  });
});

Deno.test("resolveVersion: versions the retention pruned are refused, labelled ones are not", async () => {
  const { resolveVersion, VersionError } = await import("../../src/sync/mod.ts");
  await withIndex(async (s, run) => {
    const v1 = await run(put("a", 0, "1"));
    const v2 = await run(put("a", v1, "2"));
    await run({ op: "label", name: "one", version: v1 });
    const v4 = await run(put("a", v2, "3"));
    // Keep only heads, no time window: a@2 goes (a@1 is pinned by the label).
    await run({ op: "prune", keepVersions: 1, keepMs: 0, now: 1e12 });
    const barrier = () => Promise.resolve();
    assert.equal(await s.horizon(), v4);
    await assert.rejects(resolveVersion(s, String(v2), barrier), VersionError);
    await assert.rejects(resolveVersion(s, new Date(2).toISOString(), barrier), /older than/);
    assert.equal(await resolveVersion(s, "one", barrier), v1, "a label keeps its version");
    assert.equal(await resolveVersion(s, String(v4), barrier), v4);
  });
});
