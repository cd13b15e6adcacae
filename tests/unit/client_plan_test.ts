/** The tree planner (src/sync/tree_plan.ts, through the push client) and the client session bodies (src/client/wire.ts). */
import assert from "node:assert/strict";
import { sha256 } from "../../src/chunk/mod.ts";
import {
  BodyDecodeError,
  ClientError,
  decodeCommitRequest,
  decodeTreePage,
  decodeTreeRequest,
  encodeCommitRequest,
  encodeTreePage,
  encodeTreeRequest,
  type LocalTree,
  planPush,
  type TreeEntry,
} from "../../src/client/mod.ts";
import { EMPTY_FILE_ROOT } from "../../src/merkle/mod.ts";
import { seededBytes } from "../helpers/bytes.ts";

type Local = LocalTree["entries"][number];
const root = (s: string) => sha256(new TextEncoder().encode(s));

function file(path: string, content: string, mode = 0o644): Local {
  return { path, kind: "file", size: content.length, mtime: 1, mode, ino: 0, root: root(content) };
}
function dir(path: string): Local {
  return { path, kind: "dir", size: 0, mtime: 1, mode: 0o755, ino: 0 };
}
function remoteFile(path: string, content: string, version: number, mode = 0o644): TreeEntry {
  return { path, version, kind: "file", root: root(content), size: content.length, mode, mtime: 9 };
}
function remoteDir(path: string, version: number): TreeEntry {
  return { path, version, kind: "dir", root: EMPTY_FILE_ROOT, size: 0, mode: 0o755, mtime: 9 };
}

Deno.test("plan: an identical folder plans nothing, whatever the mtimes", () => {
  const plan = planPush(
    [dir("d"), file("d/a", "x"), file("b", "y")],
    [
      remoteDir("p", 1),
      remoteDir("p/d", 1),
      remoteFile("p/d/a", "x", 2),
      remoteFile("p/b", "y", 3),
    ],
    "p",
    true,
  );
  assert.equal(plan.ops.length, 0);
});

Deno.test("plan: changed content or mode is put on its base; new entries on base 0", () => {
  const plan = planPush(
    [file("a", "new"), file("b", "same", 0o755), file("c", "fresh"), dir("e")],
    [remoteFile("a", "old", 5), remoteFile("b", "same", 6)],
    "",
    false,
  );
  assert.deepEqual(
    plan.ops.map((o) => [o.op, "path" in o ? o.path : "", "base" in o ? o.base : -1]),
    [
      ["mkdir", "e", 0],
      ["put", "a", 5],
      ["put", "b", 6],
      ["put", "c", 0],
    ],
  );
  assert.deepEqual(plan.putFiles, ["a", "b", "c"]);
  assert.deepEqual(plan.counts, { put: 3, mkdir: 1, delete: 0 });
});

Deno.test("plan: --delete removes extras deepest first, before anything is created", () => {
  const plan = planPush(
    [file("keep", "k")],
    [
      remoteDir("old", 1),
      remoteDir("old/sub", 2),
      remoteFile("old/sub/x", "x", 3),
      remoteFile("keep", "k", 4),
      remoteFile("gone", "g", 5),
    ],
    "",
    true,
  );
  assert.deepEqual(plan.ops.map((o) => `${o.op} ${"path" in o ? o.path : ""}`), [
    "delete old/sub/x",
    "delete old/sub",
    "delete old",
    "delete gone",
  ]);
  const without = planPush(
    [file("keep", "k")],
    [remoteFile("keep", "k", 4), remoteFile("gone", "g", 5)],
    "",
    false,
  );
  assert.equal(without.ops.length, 0, "without --delete extras stay");
});

Deno.test("plan: a kind change needs --delete and then replaces the subtree", () => {
  const remote = [remoteDir("a", 1), remoteFile("a/x", "x", 2)];
  assert.throws(
    () => planPush([file("a", "now a file")], remote, "", false),
    (e: unknown) => e instanceof ClientError && e.code === "rejected" && /--delete/.test(e.message),
  );
  const plan = planPush([file("a", "now a file")], remote, "", true);
  assert.deepEqual(
    plan.ops.map((o) => `${o.op} ${"path" in o ? o.path : ""} ${"base" in o ? o.base : ""}`),
    [
      "delete a/x 2",
      "delete a 1",
      "put a 0",
    ],
  );
});

Deno.test("plan: a prefix is created when absent and symlinks carry their target", () => {
  const link: Local = {
    path: "l",
    kind: "symlink",
    size: 1,
    mtime: 1,
    mode: 0o777,
    ino: 0,
    target: "t",
  };
  const plan = planPush([link], [], "builds/7", false);
  assert.deepEqual(plan.ops.map((o) => o.op), ["mkdir", "put"]);
  const put = plan.ops[1];
  assert.equal(put.op === "put" && put.kind === "symlink" && put.target, "t");
  assert.equal(put.op === "put" && put.path, "builds/7/l");
  const same = planPush(
    [link],
    [{ ...remoteFile("builds/7/l", "", 3), kind: "symlink", target: "t", mode: 0o644 }],
    "builds/7",
    false,
  );
  assert.equal(
    same.ops.filter((o) => o.op === "put").length,
    0,
    "a symlink's mode is not compared",
  );
});

Deno.test("wire: session bodies round-trip and garbage is a BodyDecodeError", () => {
  const req = { prefix: "a/b", at: "release-1", offset: 10, limit: 500 };
  assert.deepEqual(decodeTreeRequest(encodeTreeRequest(req)), req);
  const page = {
    version: 7,
    total: 2,
    records: [remoteFile("a/b/c", "c", 7), {
      ...remoteFile("a/b/l", "", 6),
      kind: "symlink" as const,
      target: "c",
    }],
  };
  assert.deepEqual(decodeTreePage(encodeTreePage(page)), page);
  const cr = { budgetMs: 5000, command: new Uint8Array([1, 2, 3]) };
  assert.deepEqual(decodeCommitRequest(encodeCommitRequest(cr)), cr);
  for (
    const junk of [
      new Uint8Array([0xff]),
      new Uint8Array([0x80]),
      encodeTreeRequest({ ...req, limit: -1 } as never),
    ]
  ) {
    assert.throws(() => decodeTreeRequest(junk), BodyDecodeError);
    assert.throws(() => decodeTreePage(junk), BodyDecodeError);
    assert.throws(() => decodeCommitRequest(junk), BodyDecodeError);
  }
});

Deno.test("local tree: many concurrent reads over more files than handles all verify", async () => {
  const { LocalTree } = await import("../../src/client/mod.ts");
  const dir = await Deno.makeTempDir({ prefix: "fs-localtree-" });
  try {
    for (let i = 0; i < 40; i++) {
      await Deno.writeFile(`${dir}/f${i}`, seededBytes(i, 600_000));
    }
    // A FIFO is skipped with a notice, not a failure (mkfifo is a system tool).
    await new Deno.Command("mkfifo", { args: [`${dir}/pipe`] }).output();
    const skipped: string[] = [];
    const tree = await LocalTree.scan(dir, undefined, (p) => skipped.push(p));
    try {
      const perFile = tree.entries.filter((e) => e.kind === "file").map((e) =>
        tree.objectsOf(e.path).slice(1) // chunks only: the root node is kept in memory
      );
      // Open 16 files, then read the rest of them while 24 more files open: the handle cache
      // must evict files whose reads are in flight.
      for (const chunks of perFile.slice(0, 16)) await tree.read(chunks[0]);
      const hashes = perFile.flat();
      const bytes = await Promise.all(hashes.map((h) => tree.read(h)));
      bytes.forEach((b, i) => assert.deepEqual(sha256(b), hashes[i]));
      assert.deepEqual(skipped, ["pipe"]);
    } finally {
      tree.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
