/**
 * Staged batches: a change too large for one Raft entry is staged part by part and committed
 * by one `commit-batch` entry that applies every part as one command, all or none, surviving
 * a crash half-way, snapshots taken between staging and commit, and prunes that clean up done
 * and abandoned batches. Plus the strict codec of the two ops.
 */
import assert from "node:assert/strict";
import { toHex } from "../../src/chunk/mod.ts";
import {
  type ApplyResult,
  type Command,
  CommandDecodeError,
  decodeCommand,
  decodeFileOps,
  decodeSnapshot,
  encodeCommand,
  encodeFileOps,
  type FileOp,
  IndexState,
  type IndexStateOptions,
  isBatchId,
  MAX_BATCH_OPS,
  type Op,
  STAGE_ABANDON_MS,
} from "../../src/fsm/mod.ts";
import { cborDecode, cborEncode } from "../../src/wire/mod.ts";
import { all, dump, ok, root, withKv } from "../helpers/fsm.ts";

function put(path: string, base = 0, n = 1): FileOp {
  return { op: "put", path, base, kind: "file", root: root(n), size: n, mode: 0o644, mtime: 1000 };
}
const del = (path: string, base: number): FileOp => ({ op: "delete", path, base });
const cmd = (ops: Op[], time = 0, origin = "n1"): Uint8Array =>
  encodeCommand({ origin, ops, time });
const stage = (batch: string, part: number, ops: FileOp[], time = 0) =>
  cmd([{ op: "stage", batch, part, ops }], time, "gateway");
const commit = (batch: string, parts: number, time = 0) =>
  cmd([{ op: "commit-batch", batch, parts }], time, "n2");

const A = "batch-aaaa";
const B = "batch-bbbb";
const C = "batch-cccc";

const without = (d: [string, unknown][], ...parts: string[]) =>
  d.filter(([k]) => !parts.some((p) => k.includes(`"${p}"`)));

function rejected(r: ApplyResult, code: string, message?: RegExp): void {
  assert.ok(!r.ok, "expected a rejection");
  assert.equal(r.code, code, r.message);
  if (message) assert.match(r.message, message);
}

const stageKeys = async (kv: Deno.Kv, ...sub: Deno.KvKeyPart[]) =>
  (await all(kv.list({ prefix: ["fsm", "stage", ...sub] }))).length;

/** Seed entries 1..2: files to change, delete and rename, and a case twin. */
async function seed(s: IndexState): Promise<void> {
  ok(await s.apply(1, cmd([put("keep"), put("old/a"), put("old/b"), put("Docs/Readme.md")], 10)));
  ok(await s.apply(2, cmd([put("keep", 1, 2)], 20)));
}

/** Three parts touching the seed and creating many paths. */
function threeParts(n = 30): FileOp[][] {
  const p0: FileOp[] = [put("keep", 2, 3), del("old/b", 1)];
  const p1: FileOp[] = [{ op: "rename", from: "old/a", fromBase: 1, to: "new/a", toBase: 0 }];
  const p2: FileOp[] = [
    del("Docs/Readme.md", 1),
    put("Docs/README.md", 0, 9),
    { op: "mkdir", path: "empty", base: 0, mode: 0o700, mtime: 5 },
  ];
  for (let i = 0; i < n; i++) [p0, p1, p2][i % 3].push(put(`tree/${i % 5}/f${i}`, 0, i));
  return [p0, p1, p2];
}

async function stageAll(s: IndexState, first: number, batch: string, parts: FileOp[][]) {
  for (let i = 0; i < parts.length; i++) {
    ok(await s.apply(first + i, stage(batch, i, parts[i], 50)));
  }
}

Deno.test("fsm stage: three staged parts commit as one atomic entry", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    await seed(s);
    const parts = threeParts();
    const before = (await all(s.list({ tombstones: true }))).map((r) => `${r.path}@${r.version}`);
    await stageAll(s, 3, A, parts);
    // Staged parts are invisible: the tree is unchanged, only set aside.
    assert.deepEqual(
      (await all(s.list({ tombstones: true }))).map((r) => `${r.path}@${r.version}`),
      before,
    );
    assert.deepEqual(await s.stagedOps(A, 3), parts.flat());
    assert.equal(await s.stagedOps(A, 4), null, "part 3 is missing");
    assert.deepEqual((await kv.get(["fsm", "stage-at", A])).value, { time: 50, index: 3 });

    ok(await s.apply(6, commit(A, 3, 600)));
    const live = await all(s.list());
    const changed = live.filter((r) => r.version === 6);
    // 30 puts + keep + new/a + Docs/README.md + empty, plus created parents new, tree, tree/0..4.
    assert.equal(changed.length, 30 + 4 + 1 + 1 + 5);
    assert.ok(changed.every((r) => r.origin === "n2" && r.committedAt === 600));
    assert.deepEqual((await s.history("keep")).map((r) => r.version), [6, 2, 1]);
    assert.equal((await s.get("keep"))?.size, 3);
    assert.equal((await s.get("old/b"))?.deleted, true);
    assert.equal((await s.get("old/a"))?.deleted, true);
    assert.equal((await s.get("new/a"))?.root.length, 32);
    assert.equal((await s.get("Docs/README.md"))?.version, 6);
    assert.equal((await s.get("empty"))?.mode, 0o700);
    assert.equal(await s.versionAt(600), 6);
    assert.equal((await s.get("keep", { at: 5 }))?.version, 2);
    assert.equal((await kv.get(["fsm", "stage-done", A])).value, 6);
    assert.equal(await s.stagedOps(A, 3), null, "done");
    assert.ok(await stageKeys(kv, A) > 0, "parts stay until a prune");
    rejected(await s.apply(7, commit(A, 3)), "invalid", /committed already/);
  });
});

Deno.test("fsm stage: a conflict in the last part refuses the whole batch, writing nothing", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    await seed(s);
    const parts = threeParts();
    // keep is at 2, and at 6 within the batch (part 0 changed it): checked like one command.
    parts[2].push(put("keep", 2, 7));
    await stageAll(s, 3, A, parts);
    const staged = await dump(kv);
    const r = await s.apply(6, commit(A, 3));
    rejected(r, "conflict");
    assert.equal(!r.ok && r.path, "keep");
    assert.equal(!r.ok && r.current, 6);
    const after = await dump(kv);
    assert.deepEqual(without(after, "applied", "stage-done"), without(staged, "applied"));
    assert.equal(await s.applied(), 6);
    assert.equal((await kv.get(["fsm", "stage-done", A])).value, 6);
    assert.equal(await s.stagedOps(A, 3), null);
    rejected(await s.apply(7, commit(A, 3)), "invalid", /committed already/);
  });
});

Deno.test("fsm stage: a missing part refuses the batch and ends it", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    await seed(s);
    const [p0, , p2] = threeParts();
    ok(await s.apply(3, stage(A, 0, p0)));
    ok(await s.apply(4, stage(A, 2, p2)));
    assert.equal(await s.stagedOps(A, 3), null);
    const before = await dump(kv);
    rejected(await s.apply(5, commit(A, 3)), "invalid", /part 1 of batch batch-aaaa is missing/);
    assert.deepEqual(without(await dump(kv), "applied", "stage-done"), without(before, "applied"));
    assert.equal((await kv.get(["fsm", "stage-done", A])).value, 5);
    rejected(await s.apply(6, commit(B, 1)), "invalid", /part 0 of batch batch-bbbb is missing/);
  });
});

Deno.test("fsm stage: staging a part again replaces it, chunks included", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    await seed(s);
    const big: FileOp[] = [];
    for (let i = 0; i < 3000; i++) big.push(put(`big/some/longer/path/name_${i}.bin`, 0, i));
    assert.ok(encodeFileOps(big).length > 2 * 60 * 1024);
    ok(await s.apply(3, stage(A, 0, big, 30)));
    const chunks = await all(kv.list<{ bytes: Uint8Array }>({ prefix: ["fsm", "stage", A, 0] }));
    assert.ok(chunks.length >= 3, `${chunks.length} chunks`);
    assert.ok(chunks.every((c) => c.value.bytes.length <= 60 * 1024));
    assert.deepEqual(await s.stagedOps(A, 1), big);
    const small = [put("small")];
    ok(await s.apply(4, stage(A, 0, small, 40)));
    assert.equal(await stageKeys(kv, A, 0), 1);
    assert.deepEqual(await s.stagedOps(A, 1), small);
    assert.deepEqual((await kv.get(["fsm", "stage-at", A])).value, { time: 30, index: 3 });
    ok(await s.apply(5, commit(A, 1)));
    assert.equal((await s.get("small"))?.version, 5);
    assert.equal(await s.get("big/some/longer/path/name_0.bin"), null);
  });
});

Deno.test("fsm stage: stage after done, and batch ops sharing a command, are refused", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    await seed(s);
    ok(await s.apply(3, stage(A, 0, [put("x")])));
    ok(await s.apply(4, commit(A, 1)));
    const before = await dump(kv);
    rejected(await s.apply(5, stage(A, 1, [put("y")])), "invalid", /committed already/);
    rejected(await s.apply(6, stage(A, 0, [put("y")])), "invalid", /committed already/);
    rejected(
      await s.apply(7, cmd([{ op: "stage", batch: B, part: 0, ops: [put("z")] }, put("w")])),
      "invalid",
      /a stage must be the only op/,
    );
    rejected(
      await s.apply(8, cmd([put("w"), { op: "commit-batch", batch: B, parts: 1 }])),
      "invalid",
      /a commit-batch must be the only op/,
    );
    assert.deepEqual(without(await dump(kv), "applied"), without(before, "applied"));
    assert.equal(await s.applied(), 8);
    assert.equal(await s.stagedOps(B, 1), null);
  });
});

Deno.test("fsm stage: a crash after any commit of a large commit-batch, then re-delivery, equals a clean apply", async () => {
  const limits = { mutations: 40 };
  const parts = threeParts(300);
  const run = async (s: IndexState) => {
    await seed(s);
    await stageAll(s, 3, A, parts);
  };
  const clean = await withKv(async (kv) => {
    const s = new IndexState(kv, ["fsm"], { commitLimits: limits });
    await run(s);
    ok(await s.apply(6, commit(A, 3, 60)));
    return { dump: await dump(kv), snap: toHex(await s.snapshot()) };
  });
  let commits = 0;
  await withKv(async (kv) => {
    const s = new IndexState(kv, ["fsm"], {
      commitLimits: limits,
      afterCommit: (_n, index) => void (index === 6 && commits++),
    });
    await run(s);
    ok(await s.apply(6, commit(A, 3, 60)));
  });
  assert.ok(commits >= 20, `commit-batch took ${commits} commits`);
  for (let k = 1; k < commits; k++) {
    await withKv(async (kv) => {
      const options: IndexStateOptions = {
        commitLimits: limits,
        afterCommit: (n, index) => {
          if (index === 6 && n === k) throw new Error("simulated crash");
        },
      };
      const crashing = new IndexState(kv, ["fsm"], options);
      await run(crashing);
      await assert.rejects(crashing.apply(6, commit(A, 3, 60)), /simulated crash/);
      assert.equal(await crashing.applied(), 5);
      assert.equal((await crashing.get("keep"))?.version, 2, "invisible half-way");
      assert.equal((await kv.get(["fsm", "stage-done", A])).value, null);
      const restarted = new IndexState(kv, ["fsm"], { commitLimits: limits });
      ok(await restarted.apply(6, commit(A, 3, 60)));
      assert.deepEqual(await dump(kv), clean.dump, `crash after commit ${k}`);
      assert.equal(toHex(await restarted.snapshot()), clean.snap);
    });
  }
});

Deno.test("fsm stage: a crash half-way through staging a part, then re-delivery, converges", async () => {
  const limits = { bytes: 70 * 1024 };
  const big: FileOp[] = [];
  for (let i = 0; i < 3000; i++) big.push(put(`big/some/longer/path/name_${i}.bin`, 0, i));
  const small: FileOp[] = [];
  for (let i = 0; i < 1500; i++) small.push(put(`s/${i}`, 0, i));
  const run = async (s: IndexState) => {
    await seed(s);
    ok(await s.apply(3, stage(A, 0, big, 30)));
  };
  let commits = 0;
  const clean = await withKv(async (kv) => {
    const s = new IndexState(kv, ["fsm"], {
      commitLimits: limits,
      afterCommit: (_n, index) => void (index === 4 && commits++),
    });
    await run(s);
    ok(await s.apply(4, stage(A, 0, small, 40)));
    return await dump(kv);
  });
  assert.ok(commits >= 2, `took ${commits} commits`);
  for (let k = 1; k < commits; k++) {
    await withKv(async (kv) => {
      const crashing = new IndexState(kv, ["fsm"], {
        commitLimits: limits,
        afterCommit: (n, index) => {
          if (index === 4 && n === k) throw new Error("simulated crash");
        },
      });
      await run(crashing);
      await assert.rejects(crashing.apply(4, stage(A, 0, small, 40)), /simulated crash/);
      // A half-replaced part reads as absent, never as a mix.
      assert.equal(await crashing.stagedOps(A, 1), null, `k=${k}`);
      const restarted = new IndexState(kv, ["fsm"], { commitLimits: limits });
      ok(await restarted.apply(4, stage(A, 0, small, 40)));
      assert.deepEqual(await dump(kv), clean, `crash after commit ${k}`);
    });
  }
});

Deno.test("fsm stage: a node restored from a snapshot taken while staged commits the same", async () => {
  await withKv(async (kvA) =>
    await withKv(async (kvB) => {
      const limits = { mutations: 100 };
      const a = new IndexState(kvA, ["fsm"], { commitLimits: limits });
      await seed(a);
      const parts = threeParts(3000);
      await stageAll(a, 3, A, parts);
      ok(await a.apply(6, stage(B, 0, [put("other")], 60)));
      ok(await a.apply(7, stage(C, 0, [put("third")], 70)));
      ok(await a.apply(8, commit(C, 1)));
      const snap = await a.snapshot();
      const decoded = decodeSnapshot(snap);
      assert.deepEqual(
        decoded.batches.parts.map((p) => `${p.batch}/${p.part}@${p.index}`),
        [`${A}/0@3`, `${A}/1@4`, `${A}/2@5`, `${B}/0@6`, `${C}/0@7`],
      );
      assert.deepEqual(decoded.batches.done, [{ batch: C, index: 8 }]);

      const b = new IndexState(kvB, ["fsm"], { commitLimits: limits });
      ok(await b.apply(1, stage("stale-batch", 0, [put("stale")])));
      await b.restore(snap);
      assert.deepEqual(await dump(kvB), await dump(kvA));
      assert.equal(toHex(await b.snapshot()), toHex(snap));
      assert.deepEqual(await b.stagedOps(A, 3), parts.flat());
      ok(await a.apply(9, commit(A, 3, 90)));
      ok(await b.apply(9, commit(A, 3, 90)));
      assert.deepEqual(await dump(kvB), await dump(kvA));
      rejected(await b.apply(10, stage(C, 1, [put("x")])), "invalid", /committed already/);
    })
  );
});

Deno.test("fsm stage: snapshots without staged batches keep the 9-element form", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    await seed(s);
    const snap = await s.snapshot();
    assert.equal((cborDecode(snap) as unknown[]).length, 9);
    assert.deepEqual(decodeSnapshot(snap).batches, { parts: [], started: [], done: [] });
    const eight = cborEncode((cborDecode(snap) as unknown[]).slice(0, 8));
    assert.equal(decodeSnapshot(eight).horizon, 0);
  });
});

Deno.test("fsm stage: prune drops done and abandoned batches, keeps fresh ones", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    await seed(s);
    const now = 1_000 * STAGE_ABANDON_MS;
    ok(await s.apply(3, stage(A, 0, [put("a")], now - 2 * STAGE_ABANDON_MS)));
    ok(await s.apply(4, commit(A, 1, now - 2 * STAGE_ABANDON_MS)));
    ok(await s.apply(5, stage(B, 0, [put("b")], now - STAGE_ABANDON_MS - 1)));
    ok(await s.apply(6, stage(B, 1, [put("b2")], now - 1000)));
    ok(await s.apply(7, stage(C, 0, [put("c")], now - STAGE_ABANDON_MS + 1)));
    ok(await s.apply(8, stage(C, 1, [put("c2")], now)));
    const r = await s.apply(9, cmd([{ op: "prune", keepVersions: 10, keepMs: 0, now }]));
    assert.deepEqual(r, { ok: true, version: 9, pruned: 0, batchesRemoved: 2 });
    for (const batch of [A, B]) {
      assert.equal(await stageKeys(kv, batch), 0, batch);
      assert.equal((await kv.get(["fsm", "stage-at", batch])).value, null);
      assert.equal((await kv.get(["fsm", "stage-done", batch])).value, null);
    }
    assert.equal(await stageKeys(kv, C), 2);
    assert.deepEqual(await s.stagedOps(C, 2), [put("c"), put("c2")]);
    rejected(await s.apply(10, commit(B, 2)), "invalid", /part 0 of batch batch-bbbb is missing/);
    ok(await s.apply(11, commit(C, 2)));
    assert.equal((await s.get("c2"))?.version, 11);
    assert.equal((await s.get("a"))?.version, 4, "a done batch's changes stay");
    const r2 = await s.apply(12, cmd([{ op: "prune", keepVersions: 10, keepMs: 0, now }]));
    assert.deepEqual(r2, { ok: true, version: 12, pruned: 0, batchesRemoved: 2 });
    assert.equal((await all(kv.list({ prefix: ["fsm", "stage"] }))).length, 0);
    assert.equal((await all(kv.list({ prefix: ["fsm", "stage-at"] }))).length, 0);
    assert.equal((await all(kv.list({ prefix: ["fsm", "stage-done"] }))).length, 0);
  });
});

Deno.test("fsm stage: the codec round-trips stage and commit-batch, and refuses garbage", () => {
  const c: Command = {
    origin: "n1",
    time: 7,
    ops: [{
      op: "stage",
      batch: "0123456789abcdef-x",
      part: 99_999,
      ops: [
        put("a/b", 3),
        {
          op: "put",
          path: "l",
          base: 0,
          kind: "symlink",
          root: root(0),
          size: 0,
          mode: 0o777,
          mtime: 1,
          target: "a",
        },
        { op: "mkdir", path: "d", base: 0, mode: 0o755, mtime: 2 },
        del("x", 4),
        { op: "rename", from: "p", fromBase: 1, to: "q", toBase: 0 },
      ],
    }],
  };
  assert.deepEqual(decodeCommand(encodeCommand(c)), c);
  const cb: Command = {
    origin: "n1",
    time: 0,
    ops: [{ op: "commit-batch", batch: A, parts: 100_000 }],
  };
  assert.deepEqual(decodeCommand(encodeCommand(cb)), cb);
  const stageOp = c.ops[0] as { ops: FileOp[] };
  assert.deepEqual(decodeFileOps(encodeFileOps(stageOp.ops)), stageOp.ops);
  assert.ok(isBatchId("abcdefgh") && !isBatchId("abcdefg") && !isBatchId("ABCDEFGH"));

  const ok1 = [[3, "a", 1]];
  const bad: [unknown, RegExp][] = [
    [[1, "n", [[10, A, 0]]], /ops\[0\] must be an array of 4/],
    [[1, "n", [[10, A, 0, ok1, 1]]], /ops\[0\] must be an array of 4/],
    [[1, "n", [[11, A]]], /ops\[0\] must be an array of 3/],
    [[1, "n", [[11, A, 1, 1]]], /ops\[0\] must be an array of 3/],
    [[1, "n", [[10, "short", 0, ok1]]], /ops\[0\]\.batch must be 8\.\.64/],
    [[1, "n", [[10, "UPPERCASE", 0, ok1]]], /ops\[0\]\.batch/],
    [[1, "n", [[10, "a".repeat(65), 0, ok1]]], /ops\[0\]\.batch/],
    [[1, "n", [[10, "abc_defgh", 0, ok1]]], /ops\[0\]\.batch/],
    [[1, "n", [[10, 12345678, 0, ok1]]], /ops\[0\]\.batch/],
    [[1, "n", [[11, "a b c d e f", 1]]], /ops\[0\]\.batch/],
    [[1, "n", [[10, A, 100_000, ok1]]], /ops\[0\]\.part must be in 0\.\.99999/],
    [[1, "n", [[10, A, -1, ok1]]], /ops\[0\]\.part/],
    [[1, "n", [[10, A, 1.5, ok1]]], /ops\[0\]\.part/],
    [[1, "n", [[11, A, 0]]], /ops\[0\]\.parts must be in 1\.\.100000/],
    [[1, "n", [[11, A, 100_001]]], /ops\[0\]\.parts/],
    [[1, "n", [[10, A, 0, []]]], /ops\[0\]\.ops must be an array of 1\.\.50000/],
    [[1, "n", [[10, A, 0, "x"]]], /ops\[0\]\.ops must be an array/],
    [[1, "n", [[10, A, 0, [[10, A, 1, ok1]]]]], /ops\[0\]\.ops\[0\] must be a put, mkdir/],
    [[1, "n", [[10, A, 0, [[3, "a", 1], [11, A, 1]]]]], /ops\[0\]\.ops\[1\] must be a put/],
    [[1, "n", [[10, A, 0, [[9, 1, 1, 1]]]]], /ops\[0\]\.ops\[0\] must be a put/],
    [[1, "n", [[10, A, 0, [[7, "l", 1]]]]], /ops\[0\]\.ops\[0\] must be a put/],
    [[1, "n", [[10, A, 0, [[3, "a", 1], [3, "b", -1]]]]], /ops\[0\]\.ops\[1\]\.base/],
    [[1, "n", [[10, A, 0, [[3, "a"]]]]], /ops\[0\]\.ops\[0\] must be an array of 3/],
    [[1, "n", [[10, A, 0, [null]]]], /ops\[0\]\.ops\[0\] must be a put/],
  ];
  for (const [wire, re] of bad) {
    assert.throws(() => decodeCommand(cborEncode(wire)), (e: Error) => {
      assert.ok(e instanceof CommandDecodeError, e.message);
      assert.match(e.message, re);
      return true;
    }, JSON.stringify(wire));
  }
  assert.throws(() => decodeFileOps(cborEncode([[10, A, 0, ok1]])), CommandDecodeError);
  assert.throws(() => decodeFileOps(new Uint8Array([0xff, 0x00])), CommandDecodeError);
});

Deno.test("fsm stage: garbage staged batches in a snapshot fail with CommandDecodeError", async () => {
  const snap = await withKv(async (kv) => {
    const s = new IndexState(kv);
    await seed(s);
    ok(await s.apply(3, stage(A, 0, [put("x")], 5)));
    return await s.snapshot();
  });
  const wire = cborDecode(snap) as unknown[];
  assert.equal(wire.length, 10);
  const [parts, started, done] = wire[9] as unknown[][];
  const bad: [unknown, RegExp][] = [
    [[parts, started], /snapshot\.batches must be an array of 3/],
    [[[[A, 0, 3, cborEncode([[10, A, 0, [[3, "a", 1]]]])]], started, done], /must be a put/],
    [[[[A, 0, 3, "bytes"]], started, done], /batches\.parts\[0\]\.bytes must be bytes/],
    [[[["BAD", 0, 3, (parts[0] as unknown[])[3]]], started, done], /parts\[0\]\.batch/],
    [[parts, [[A, -1, 3]], done], /started\[0\]\.time/],
    [[parts, started, [[A]]], /done\[0\] must be an array of 2/],
  ];
  for (const [batches, re] of bad) {
    const bytes = cborEncode([...wire.slice(0, 9), batches]);
    assert.throws(() => decodeSnapshot(bytes), (e: Error) => {
      assert.ok(e instanceof CommandDecodeError, e.message);
      assert.match(e.message, re);
      return true;
    });
  }
  assert.throws(() => decodeSnapshot(cborEncode([...wire, 1])), CommandDecodeError);
});

Deno.test("fsm stage: a batch of more than MAX_BATCH_OPS ops is refused", async () => {
  await withKv(async (kv) => {
    const s = new IndexState(kv);
    const per = 50_000;
    const parts = Math.ceil((MAX_BATCH_OPS + 1) / per);
    for (let part = 0; part < parts; part++) {
      const ops: FileOp[] = [];
      for (let i = 0; i < per; i++) ops.push(del(`p${part}/${i}`, 1));
      ok(await s.apply(1 + part, stage(A, part, ops)));
    }
    assert.equal(await s.stagedOps(A, parts), null);
    assert.equal((await s.stagedOps(A, parts - 1))?.length, (parts - 1) * per);
    rejected(await s.apply(1 + parts, commit(A, parts)), "invalid", /more than 500000 ops/);
    assert.equal((await kv.get(["fsm", "stage-done", A])).value, 1 + parts);
  });
});

Deno.test("fsm stage: a prune that drops batches, re-delivered after a crash, converges", async () => {
  const limits = { mutations: 4 };
  const now = 1_000 * STAGE_ABANDON_MS;
  const run = async (s: IndexState) => {
    ok(await s.apply(1, stage(A, 0, [put("a")], now - 2 * STAGE_ABANDON_MS)));
    ok(await s.apply(2, stage(A, 1, [put("a2")], now)));
    ok(await s.apply(3, stage(B, 0, [put("b")], now)));
    ok(await s.apply(4, commit(B, 1, now)));
    ok(await s.apply(5, stage(C, 0, [put("c")], now)));
  };
  const prune = cmd([{ op: "prune", keepVersions: 1, keepMs: 0, now }]);
  let commits = 0;
  const clean = await withKv(async (kv) => {
    const s = new IndexState(kv, ["fsm"], {
      commitLimits: limits,
      afterCommit: (_n, index) => void (index === 6 && commits++),
    });
    await run(s);
    ok(await s.apply(6, prune));
    return await dump(kv);
  });
  assert.ok(commits >= 3, `took ${commits} commits`);
  for (let k = 1; k < commits; k++) {
    await withKv(async (kv) => {
      const crashing = new IndexState(kv, ["fsm"], {
        commitLimits: limits,
        afterCommit: (n, index) => {
          if (index === 6 && n === k) throw new Error("simulated crash");
        },
      });
      await run(crashing);
      await assert.rejects(crashing.apply(6, prune), /simulated crash/);
      const restarted = new IndexState(kv, ["fsm"], { commitLimits: limits });
      ok(await restarted.apply(6, prune));
      assert.deepEqual(await dump(kv), clean, `crash after commit ${k}`);
    });
  }
});
