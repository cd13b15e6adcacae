/**
 * The replicated file index: compare-and-swap semantics, all-or-none commands, path policy,
 * case conflicts, directories, tombstones, idempotent re-delivery, snapshots, and a strict
 * decoder for commands that come from peers.
 */
import assert from "node:assert/strict";
import { sha256, toHex } from "../../src/chunk/mod.ts";
import {
  type ApplyResult,
  type Command,
  CommandDecodeError,
  decodeCommand,
  encodeCommand,
  type FileOp,
  IndexState,
} from "../../src/fsm/mod.ts";
import { mutate, rng } from "../helpers/fsm.ts";

const ROOT = sha256(new Uint8Array([1]));

function put(path: string, base = 0, size = 1): FileOp {
  return { op: "put", path, base, kind: "file", root: ROOT, size, mode: 0o644, mtime: 1000 };
}

async function withState(
  fn: (s: IndexState, run: (ops: FileOp[]) => Promise<ApplyResult>) => Promise<void>,
) {
  const kv = await Deno.openKv(":memory:");
  const state = new IndexState(kv);
  let index = 0;
  try {
    await fn(state, (ops) => state.apply(++index, encodeCommand({ origin: "n1", ops })));
  } finally {
    kv.close();
  }
}

async function livePaths(s: IndexState): Promise<string[]> {
  const out: string[] = [];
  for await (const r of s.list()) out.push(`${r.path}:${r.kind}@${r.version}`);
  return out;
}

Deno.test("fsm: put is a compare-and-swap; the version is the log index", async () => {
  await withState(async (s, run) => {
    assert.deepEqual(await run([put("a.txt")]), { ok: true, version: 1 });
    const again = await run([put("a.txt")]);
    assert.equal(again.ok, false);
    assert.equal(!again.ok && again.code, "conflict");
    assert.equal(!again.ok && again.current, 1);
    assert.deepEqual(await run([put("a.txt", 1, 5)]), { ok: true, version: 3 });
    const stale = await run([put("a.txt", 1)]);
    assert.equal(!stale.ok && stale.code, "conflict");
    assert.equal((await s.get("a.txt"))?.size, 5);
    assert.equal(await s.applied(), 4, "rejected entries still advance the applied index");
  });
});

Deno.test("fsm: parents are created as directories; a file cannot hold children", async () => {
  await withState(async (s, run) => {
    assert.ok((await run([put("a/b/c.txt")])).ok);
    assert.deepEqual(await livePaths(s), ["a:dir@1", "a/b:dir@1", "a/b/c.txt:file@1"]);
    const r = await run([put("a/b/c.txt/d")]);
    assert.equal(!r.ok && r.code, "not-a-directory");
    const over = await run([put("a", 1)]);
    assert.equal(!over.ok && over.code, "not-empty");
  });
});

Deno.test("fsm: names that differ only in case are refused while the other is live", async () => {
  await withState(async (s, run) => {
    assert.ok((await run([put("Docs/Readme.md")])).ok);
    const r = await run([put("docs/readme.md")]);
    assert.equal(!r.ok && r.code, "case-conflict");
    const r2 = await run([put("Docs/README.md")]);
    assert.equal(!r2.ok && r2.code, "case-conflict");
    assert.ok((await run([{ op: "delete", path: "Docs/Readme.md", base: 1 }])).ok);
    assert.ok((await run([put("Docs/README.md")])).ok);
    assert.equal((await s.get("Docs/Readme.md"))?.deleted, true);
  });
});

Deno.test("fsm: deletes leave tombstones; directories must be empty; commands are all or none", async () => {
  await withState(async (s, run) => {
    await run([put("d/x"), put("d/y")]);
    const notEmpty = await run([{ op: "delete", path: "d", base: 1 }]);
    assert.equal(!notEmpty.ok && notEmpty.code, "not-empty");
    // Second op fails: the first must not take effect either.
    const partial = await run([
      { op: "delete", path: "d/x", base: 1 },
      { op: "delete", path: "d/y", base: 99 },
    ]);
    assert.equal(partial.ok, false);
    assert.equal((await s.get("d/x"))?.deleted, false);
    assert.ok(
      (await run([
        { op: "delete", path: "d/x", base: 1 },
        { op: "delete", path: "d/y", base: 1 },
        { op: "delete", path: "d", base: 1 },
      ])).ok,
    );
    assert.deepEqual(await livePaths(s), []);
    const tomb = await s.get("d/x");
    assert.equal(tomb?.deleted, true);
    assert.equal(tomb?.version, 4);
    const gone = await run([{ op: "delete", path: "d/x", base: 4 }]);
    assert.equal(!gone.ok && gone.code, "not-found");
    assert.ok((await run([put("d/x")])).ok, "base 0 recreates a deleted path");
  });
});

Deno.test("fsm: rename moves an entry with its content and checks both versions", async () => {
  await withState(async (s, run) => {
    await run([put("a.txt", 0, 7)]);
    await run([put("b.txt")]);
    const clash = await run([{ op: "rename", from: "a.txt", fromBase: 1, to: "b.txt", toBase: 0 }]);
    assert.equal(!clash.ok && clash.code, "conflict");
    assert.ok(
      (await run([{ op: "rename", from: "a.txt", fromBase: 1, to: "sub/c.txt", toBase: 0 }])).ok,
    );
    assert.equal((await s.get("a.txt"))?.deleted, true);
    const moved = await s.get("sub/c.txt");
    assert.equal(moved?.size, 7);
    assert.deepEqual(moved?.root, ROOT);
    assert.equal(moved?.version, 4);
    const self = await run([{ op: "rename", from: "sub", fromBase: 4, to: "sub/x", toBase: 0 }]);
    assert.equal(!self.ok && self.code, "invalid");
  });
});

Deno.test("fsm: paths that escape or are malformed are refused without effect", async () => {
  await withState(async (s, run) => {
    for (
      const bad of [
        "../x",
        "/etc/passwd",
        "a/../b",
        "a//b",
        "a/./b",
        "x\0y",
        ".filesync/k",
        "a/.filesync",
        "n".repeat(256),
        "",
      ]
    ) {
      const r = await run([put(bad)]);
      assert.equal(r.ok, false, bad);
      assert.equal(!r.ok && r.code, "invalid", bad);
    }
    assert.deepEqual(await livePaths(s), []);
  });
});

Deno.test("fsm: a re-delivered entry is skipped", async () => {
  await withState(async (s) => {
    const data = encodeCommand({ origin: "n1", ops: [put("a")] });
    assert.ok((await s.apply(5, data)).ok);
    const again = await s.apply(5, data);
    assert.equal(again.ok, false);
    assert.equal((await s.get("a"))?.version, 5);
    assert.equal(await s.applied(), 5);
  });
});

Deno.test("fsm: same commands, same state; snapshots restore it exactly", async () => {
  const kvs = await Promise.all([
    Deno.openKv(":memory:"),
    Deno.openKv(":memory:"),
    Deno.openKv(":memory:"),
  ]);
  try {
    const [a, b, c] = kvs.map((kv) => new IndexState(kv));
    const rand = rng(7);
    const names = ["a", "b", "a/x", "a/y", "B", "c/d/e", "c"];
    for (let i = 1; i <= 300; i++) {
      const path = names[Math.floor(rand() * names.length)];
      const cur = await a.get(path);
      const base = rand() < 0.8 ? (cur && !cur.deleted ? cur.version : 0) : Math.floor(rand() * i);
      const r = rand();
      const op: FileOp = r < 0.5 ? put(path, base, i) : r < 0.8 ? { op: "delete", path, base } : {
        op: "rename",
        from: path,
        fromBase: base,
        to: names[Math.floor(rand() * names.length)],
        toBase: 0,
      };
      const data = encodeCommand({ origin: `n${i % 3}`, ops: [op] });
      assert.deepEqual(await a.apply(i, data), await b.apply(i, data));
    }
    const snap = await a.snapshot();
    // Compared as hex: cbor-x's decoder caches a DataView property on the bytes it reads.
    assert.equal(toHex(snap), toHex(await b.snapshot()));
    await c.apply(1, encodeCommand({ origin: "x", ops: [put("stale")] }));
    await c.restore(snap);
    assert.equal(toHex(await c.snapshot()), toHex(snap));
    assert.equal(await c.get("stale"), null);
    assert.ok((await a.applied()) === 300 && (await c.applied()) === 300);
  } finally {
    for (const kv of kvs) kv.close();
  }
});

Deno.test("fsm: the command decoder rejects garbage and mutations with a typed error", () => {
  const rand = rng(11);
  const good = encodeCommand({
    origin: "node-1",
    ops: [put("a/b.txt", 3), { op: "rename", from: "x", fromBase: 1, to: "y", toBase: 0 }],
  } as Command);
  assert.equal(decodeCommand(good).ops.length, 2);
  let rejected = 0;
  for (let i = 0; i < 20_000; i++) {
    let bytes: Uint8Array;
    if (i % 2 === 0) {
      bytes = new Uint8Array(Math.floor(rand() * 64));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(rand() * 256);
    } else {
      bytes = mutate(good, rand);
    }
    try {
      const c = decodeCommand(bytes);
      // Whatever decodes must be well-typed enough to re-encode.
      encodeCommand(c);
    } catch (e) {
      assert.ok(
        e instanceof CommandDecodeError,
        `unexpected ${(e as Error).name}: ${(e as Error).message}`,
      );
      rejected++;
    }
  }
  assert.ok(rejected > 15_000);
});

Deno.test("fsm: the address book and single-use invites replicate and survive snapshots", async () => {
  const kvs = await Promise.all([Deno.openKv(":memory:"), Deno.openKv(":memory:")]);
  try {
    const [a, b] = kvs.map((kv) => new IndexState(kv));
    const addrs = ["/ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooWabc"];
    assert.ok(
      (await a.apply(
        1,
        encodeCommand({ origin: "n1", ops: [{ op: "peer", peerId: "p1", addrs }] }),
      )).ok,
    );
    assert.ok(
      (await a.apply(
        2,
        encodeCommand({ origin: "n1", ops: [{ op: "use-invite", inviteId: "ab" }] }),
      )).ok,
    );
    const again = await a.apply(
      3,
      encodeCommand({ origin: "n2", ops: [{ op: "use-invite", inviteId: "ab" }] }),
    );
    assert.equal(!again.ok && again.code, "invite-used");
    await b.restore(await a.snapshot());
    assert.deepEqual(await b.peers(), new Map([["p1", addrs]]));
    assert.equal(await b.inviteUsed("ab"), true);
    assert.equal(await b.inviteUsed("cd"), false);
  } finally {
    for (const kv of kvs) kv.close();
  }
});

Deno.test("fsm: setuid and setgid bits are never kept; rwx and sticky are", async () => {
  await withState(async (s, run) => {
    const tool: FileOp = {
      op: "put",
      path: "tool",
      base: 0,
      kind: "file",
      root: ROOT,
      size: 1,
      mode: 0o4755,
      mtime: 1,
    };
    const r = await run([tool, {
      op: "mkdir",
      path: "shared",
      base: 0,
      mode: 0o3775,
      mtime: 1,
    }]);
    assert.ok(r.ok);
    assert.equal((await s.get("tool"))!.mode, 0o755);
    assert.equal((await s.get("shared"))!.mode, 0o1775);
  });
});

Deno.test("fsm: a command's heads and case folds are read in a few batches, not one by one", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const s = new IndexState(kv);
    const ops = Array.from({ length: 64 }, (_, i) => put(`d${i % 8}/sub/f${i}.bin`));
    assert.deepEqual(
      await s.apply(1, encodeCommand({ origin: "n1", ops: ops.slice(0, 8) })),
      { ok: true, version: 1 },
    );
    // Count the KV read calls the next command's apply makes (its checks and writes alike).
    let reads = 0;
    const get = kv.get.bind(kv);
    const getMany = kv.getMany.bind(kv);
    kv.get = ((...a: Parameters<typeof get>) => (reads++, get(...a))) as typeof kv.get;
    kv.getMany = ((...a: Parameters<typeof getMany>) => (reads++, getMany(...a))) as typeof getMany;
    const r = await s.apply(2, encodeCommand({ origin: "n1", ops: ops.slice(8) }));
    assert.deepEqual(r, { ok: true, version: 2 });
    // 56 files under 16 directories, each looked up with its case fold: ~150 keys, checked one
    // at a time before. Read in batches of ten keys they take about 15 calls.
    assert.ok(reads < 40, `${reads} KV reads for one command`);
    // Read up front, the entries decide as they did one by one: existing parents are kept, and
    // a path differing only in case from one of them is refused.
    assert.equal((await s.get("d7/sub/f63.bin"))?.version, 2);
    assert.equal((await s.get("d0/sub"))?.version, 1);
    assert.equal((await s.get("d7/sub"))?.version, 1);
    const twin = await s.apply(
      3,
      encodeCommand({ origin: "n1", ops: [put("x.bin"), put("D7/y.bin")] }),
    );
    assert.equal(!twin.ok && twin.code, "case-conflict");
    assert.equal(await s.get("x.bin"), null, "all or none");
  } finally {
    kv.close();
  }
});
