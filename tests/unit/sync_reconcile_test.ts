/**
 * reconcile(): one table test per rule (see src/sync/reconcile.ts), upload plans checked
 * against the real state machine (every planned op list must apply cleanly), and a randomized
 * model of a node syncing against a cluster: random local and remote edit histories, rounds of
 * plan / conflict copies / materialize / adopt / upload until quiet, with the invariants
 * "no local content is ever dropped" and "the node converges to the committed index".
 */
import assert from "node:assert/strict";
import { type Hash, sha256, toHex } from "../../src/chunk/mod.ts";
import {
  encodeCommand,
  type FileOp,
  indexPathProblem,
  type IndexRecord,
  IndexState,
  type PutFile,
} from "../../src/fsm/mod.ts";
import { EMPTY_FILE_ROOT } from "../../src/merkle/mod.ts";
import type { LocalFileRecord } from "../../src/store/mod.ts";
import {
  conflictCopyName,
  ConflictNameError,
  conflictTimestamp,
  reconcile,
  syncedAfterUpload,
  syncedFromIndex,
  type SyncedRecord,
  type SyncPlan,
  uniqueConflictCopyName,
} from "../../src/sync/mod.ts";

// ---------------------------------------------------------------------------------------------
// Record builders

const roots = new Map<string, Hash>();
/** A stable fake content root per label. */
function R(label: string): Hash {
  let h = roots.get(label);
  if (!h) {
    h = sha256(new TextEncoder().encode(`content:${label}`));
    roots.set(label, h);
  }
  return h;
}

let inoCounter = 1;
function lf(label: string, o: Partial<LocalFileRecord> = {}): LocalFileRecord {
  return {
    kind: "file",
    size: 10,
    mtime: 1000,
    mode: 0o644,
    ino: inoCounter++,
    root: R(label),
    ...o,
  };
}
function ld(o: Partial<LocalFileRecord> = {}): LocalFileRecord {
  return {
    kind: "dir",
    size: 0,
    mtime: 1000,
    mode: 0o755,
    ino: inoCounter++,
    root: EMPTY_FILE_ROOT,
    ...o,
  };
}
function ll(target: string, o: Partial<LocalFileRecord> = {}): LocalFileRecord {
  return {
    kind: "symlink",
    size: target.length,
    mtime: 1000,
    mode: 0o777,
    ino: inoCounter++,
    root: EMPTY_FILE_ROOT,
    target,
    ...o,
  };
}
function cf(
  path: string,
  version: number,
  label: string,
  o: Partial<IndexRecord> = {},
): IndexRecord {
  return {
    path,
    version,
    kind: "file",
    root: R(label),
    size: 10,
    mode: 0o644,
    mtime: 1000,
    deleted: false,
    origin: "A",
    ...o,
  };
}
function cd(path: string, version: number, o: Partial<IndexRecord> = {}): IndexRecord {
  return {
    path,
    version,
    kind: "dir",
    root: EMPTY_FILE_ROOT,
    size: 0,
    mode: 0o755,
    mtime: 1000,
    deleted: false,
    origin: "A",
    ...o,
  };
}
function tomb(rec: IndexRecord, version: number): IndexRecord {
  return { ...rec, version, deleted: true };
}
function s(rec: IndexRecord): SyncedRecord {
  return syncedFromIndex(rec);
}

type Views = {
  local?: Record<string, LocalFileRecord>;
  synced?: Record<string, SyncedRecord>;
  committed?: IndexRecord[];
};
function plan(v: Views): SyncPlan {
  return reconcile(
    new Map(Object.entries(v.local ?? {})),
    new Map(Object.entries(v.synced ?? {})),
    new Map((v.committed ?? []).map((r) => [r.path, r])),
  );
}

/** A compact, comparable rendering of a plan. */
function show(p: SyncPlan) {
  return {
    upload: p.upload.map((op) => {
      switch (op.op) {
        case "put":
          return `put ${op.path}@${op.base}${op.kind === "symlink" ? `->${op.target}` : ""}`;
        case "mkdir":
          return `mkdir ${op.path}@${op.base}`;
        case "delete":
          return `delete ${op.path}@${op.base}`;
        case "rename":
          return `rename ${op.from}@${op.fromBase} ${op.to}@${op.toBase}`;
      }
    }),
    materialize: p.materialize.map((r) => `${r.deleted ? "rm" : "write"} ${r.path}@${r.version}`),
    conflicts: p.conflicts.map((c) => c.path),
    adopt: p.adopt,
  };
}
const EMPTY = { upload: [], materialize: [], conflicts: [], adopt: [] };

// ---------------------------------------------------------------------------------------------
// Per-path rules

Deno.test("reconcile: nothing changed anywhere -> empty plan", () => {
  const c = cf("a.txt", 3, "v1");
  assert.deepEqual(
    show(plan({ local: { "a.txt": lf("v1") }, synced: { "a.txt": s(c) }, committed: [c] })),
    EMPTY,
  );
  assert.deepEqual(show(plan({})), EMPTY);
});

Deno.test("reconcile U: a new local file is put with base 0; an edit with base = synced version", () => {
  const c = cf("b.txt", 3, "v1");
  const p = plan({
    local: { "a.txt": lf("new"), "b.txt": lf("v2") },
    synced: { "b.txt": s(c) },
    committed: [c],
  });
  assert.deepEqual(show(p).upload, ["put a.txt@0", "put b.txt@3"]);
  const put = p.upload[1];
  assert.ok(put.op === "put" && toHex(put.root) === toHex(R("v2")));
});

Deno.test("reconcile M: an mtime-only local change is not uploaded; a mode-only change is", () => {
  const c = cf("a.txt", 3, "v1");
  const touched = plan({
    local: { "a.txt": lf("v1", { mtime: 5000 }) },
    synced: { "a.txt": s(c) },
    committed: [c],
  });
  assert.deepEqual(show(touched), EMPTY);
  const chmod = plan({
    local: { "a.txt": lf("v1", { mode: 0o600 }) },
    synced: { "a.txt": s(c) },
    committed: [c],
  });
  assert.deepEqual(show(chmod).upload, ["put a.txt@3"]);
  assert.equal((chmod.upload[0] as { mode: number }).mode, 0o600);
  // Directory mtimes are ignored; directory modes are synced.
  const d = cd("d", 2);
  assert.deepEqual(
    show(plan({ local: { d: ld({ mtime: 9 }) }, synced: { d: s(d) }, committed: [d] })),
    EMPTY,
  );
  assert.deepEqual(
    show(plan({ local: { d: ld({ mode: 0o700 }) }, synced: { d: s(d) }, committed: [d] })).upload,
    ["mkdir d@2"],
  );
});

Deno.test("reconcile D: a local deletion is a delete with base = synced version", () => {
  const c = cf("a.txt", 3, "v1");
  assert.deepEqual(show(plan({ synced: { "a.txt": s(c) }, committed: [c] })).upload, [
    "delete a.txt@3",
  ]);
});

Deno.test("reconcile DR: a remote edit beats a local deletion; both deleted -> adopt", () => {
  const old = cf("a.txt", 3, "v1");
  const edited = cf("a.txt", 7, "v2");
  assert.deepEqual(show(plan({ synced: { "a.txt": s(old) }, committed: [edited] })), {
    ...EMPTY,
    materialize: ["write a.txt@7"],
  });
  assert.deepEqual(show(plan({ synced: { "a.txt": s(old) }, committed: [tomb(old, 7)] })), {
    ...EMPTY,
    adopt: ["a.txt"],
  });
});

Deno.test("reconcile R: a remote change with the local copy unchanged or absent is materialized", () => {
  const old = cf("a.txt", 3, "v1");
  const p = plan({
    local: { "a.txt": lf("v1"), "gone.txt": lf("g") },
    synced: { "a.txt": s(old), "gone.txt": s(cf("gone.txt", 2, "g")) },
    committed: [cf("a.txt", 7, "v2"), tomb(cf("gone.txt", 2, "g"), 8), cf("new.txt", 9, "n")],
  });
  assert.deepEqual(show(p), {
    ...EMPTY,
    materialize: ["rm gone.txt@8", "write a.txt@7", "write new.txt@9"],
  });
});

Deno.test("reconcile RD: remote deletion vs local change keeps the local content (base 0)", () => {
  const old = cf("a.txt", 3, "v1");
  const p = plan({
    local: { "a.txt": lf("v2") },
    synced: { "a.txt": s(old) },
    committed: [tomb(old, 5)],
  });
  assert.deepEqual(show(p), { ...EMPTY, upload: ["put a.txt@0"] });
  // A metadata-only local change does not resurrect a deleted file.
  const chmod = plan({
    local: { "a.txt": lf("v1", { mode: 0o600 }) },
    synced: { "a.txt": s(old) },
    committed: [tomb(old, 5)],
  });
  assert.deepEqual(show(chmod), { ...EMPTY, materialize: ["rm a.txt@5"] });
  // A tombstone this node never synced says nothing: the local file is new.
  assert.deepEqual(
    show(plan({ local: { "a.txt": lf("v9") }, committed: [tomb(old, 5)] })).upload,
    ["put a.txt@0"],
  );
  assert.deepEqual(show(plan({ committed: [tomb(old, 5)] })), EMPTY);
});

Deno.test("reconcile X: both sides changed -> conflict (local kept, committed materialized)", () => {
  const old = cf("a.txt", 3, "v1");
  const remote = cf("a.txt", 6, "remote");
  const p = plan({
    local: { "a.txt": lf("local") },
    synced: { "a.txt": s(old) },
    committed: [remote],
  });
  assert.deepEqual(show(p), { ...EMPTY, conflicts: ["a.txt"] });
  assert.equal(toHex(p.conflicts[0].local.root), toHex(R("local")));
  assert.equal(p.conflicts[0].committed.version, 6);
  // A new local file meeting a different committed file it never synced is a conflict too.
  assert.deepEqual(show(plan({ local: { "a.txt": lf("mine") }, committed: [remote] })).conflicts, [
    "a.txt",
  ]);
  // Different kinds: a local symlink against a committed file.
  assert.deepEqual(
    show(plan({ local: { "a.txt": ll("x") }, synced: { "a.txt": s(old) }, committed: [remote] }))
      .conflicts,
    ["a.txt"],
  );
});

Deno.test("reconcile E: local already equal to committed -> adopt; only mtime differs -> materialize", () => {
  const old = cf("a.txt", 3, "v1");
  const same = cf("a.txt", 6, "v2");
  assert.deepEqual(
    show(plan({ local: { "a.txt": lf("v2") }, synced: { "a.txt": s(old) }, committed: [same] })),
    { ...EMPTY, adopt: ["a.txt"] },
  );
  assert.deepEqual(show(plan({ local: { "a.txt": lf("v2") }, committed: [same] })), {
    ...EMPTY,
    adopt: ["a.txt"],
  });
  assert.deepEqual(
    show(plan({ local: { "a.txt": lf("v2", { mtime: 42 }) }, committed: [same] })),
    { ...EMPTY, materialize: ["write a.txt@6"] },
  );
  // Directories created on both sides: equal -> adopt; modes differ -> committed wins.
  assert.deepEqual(show(plan({ local: { d: ld() }, committed: [cd("d", 4)] })), {
    ...EMPTY,
    adopt: ["d"],
  });
  assert.deepEqual(show(plan({ local: { d: ld({ mode: 0o700 }) }, committed: [cd("d", 4)] })), {
    ...EMPTY,
    materialize: ["write d@4"],
  });
});

Deno.test("reconcile MC: metadata loses to content; between two mode changes committed wins", () => {
  const old = cf("a.txt", 3, "v1");
  // Remote chmod, local content edit: the edit is uploaded over it.
  const chmodded = cf("a.txt", 6, "v1", { mode: 0o600 });
  const p1 = plan({
    local: { "a.txt": lf("v2") },
    synced: { "a.txt": s(old) },
    committed: [chmodded],
  });
  assert.deepEqual(show(p1), { ...EMPTY, upload: ["put a.txt@6"] });
  // Local chmod, remote content edit: the remote edit is materialized.
  const p2 = plan({
    local: { "a.txt": lf("v1", { mode: 0o600 }) },
    synced: { "a.txt": s(old) },
    committed: [cf("a.txt", 6, "v2")],
  });
  assert.deepEqual(show(p2), { ...EMPTY, materialize: ["write a.txt@6"] });
  // Both chmod differently: committed wins.
  const p3 = plan({
    local: { "a.txt": lf("v1", { mode: 0o640 }) },
    synced: { "a.txt": s(old) },
    committed: [chmodded],
  });
  assert.deepEqual(show(p3), { ...EMPTY, materialize: ["write a.txt@6"] });
});

Deno.test("reconcile: symlinks compare by target; their mode is ignored", () => {
  const c: IndexRecord = {
    ...cf("l", 3, "x"),
    kind: "symlink",
    root: EMPTY_FILE_ROOT,
    target: "t1",
  };
  assert.deepEqual(
    show(plan({ local: { l: ll("t1", { mode: 0o755 }) }, synced: { l: s(c) }, committed: [c] })),
    EMPTY,
  );
  const p = plan({ local: { l: ll("t2") }, synced: { l: s(c) }, committed: [c] });
  assert.deepEqual(show(p).upload, ["put l@3->t2"]);
});

// ---------------------------------------------------------------------------------------------
// Directories, ordering, renames

Deno.test("reconcile: new directories are created parents first, before their contents", () => {
  const p = plan({
    local: { a: ld(), "a/b": ld(), "a/b/f": lf("f"), "a/e": lf("e"), z: lf("z") },
  });
  assert.deepEqual(show(p).upload, [
    "mkdir a@0",
    "mkdir a/b@0",
    "put a/b/f@0",
    "put a/e@0",
    "put z@0",
  ]);
});

Deno.test("reconcile: upload waves group independent ops, dependencies in earlier waves", () => {
  const p = plan({
    local: { a: ld(), "a/b": ld(), "a/b/f": lf("f"), "a/e": lf("e"), z: lf("z") },
  });
  const waves = p.uploadWaves.map((w) => show({ ...p, upload: w }).upload);
  assert.deepEqual(waves, [["mkdir a@0", "put z@0"], ["mkdir a/b@0", "put a/e@0"], [
    "put a/b/f@0",
  ]]);
  const d = cd("d", 1), e = cf("d/e", 2, "e");
  const q = plan({
    local: { d: lf("file now") },
    synced: { d: s(d), "d/e": s(e) },
    committed: [d, e],
  });
  assert.deepEqual(q.uploadWaves.map((w) => show({ ...q, upload: w }).upload), [
    ["delete d/e@2"],
    ["put d@1"],
  ]);
});

Deno.test("reconcile: rm -r deletes children before their directory", () => {
  const d = cd("d", 1), e = cd("d/e", 1), f = cf("d/e/f", 2, "f"), g = cf("d/g", 3, "g");
  const p = plan({
    synced: { d: s(d), "d/e": s(e), "d/e/f": s(f), "d/g": s(g) },
    committed: [d, e, f, g],
  });
  assert.deepEqual(show(p).upload, [
    "delete d/g@3",
    "delete d/e/f@2",
    "delete d/e@1",
    "delete d@1",
  ]);
});

Deno.test("reconcile N: a move is one rename op; copies, empty files and mtime changes are not", () => {
  const f = cf("a.txt", 3, "v1", { mtime: 77 });
  const mv = plan({
    local: { "b.txt": lf("v1", { mtime: 77 }) },
    synced: { "a.txt": s(f) },
    committed: [f],
  });
  assert.deepEqual(show(mv).upload, ["rename a.txt@3 b.txt@0"]);
  // Same content but a new mtime (cp + rm): put + delete.
  const cp = plan({
    local: { "b.txt": lf("v1", { mtime: 78 }) },
    synced: { "a.txt": s(f) },
    committed: [f],
  });
  assert.deepEqual(show(cp).upload.sort(), ["delete a.txt@3", "put b.txt@0"]);
  // Empty files are never paired (all empty files look alike).
  const e = cf("e", 3, "x", { root: EMPTY_FILE_ROOT, size: 0 });
  const em = plan({
    local: { e2: lf("x", { root: EMPTY_FILE_ROOT, size: 0 }) },
    synced: { e: s(e) },
    committed: [e],
  });
  assert.deepEqual(show(em).upload.sort(), ["delete e@3", "put e2@0"]);
  // Over an existing synced file: toBase is that file's version.
  const g = cf("g", 5, "old");
  const over = plan({
    local: { g: lf("v1", { mtime: 77 }) },
    synced: { "a.txt": s(f), g: s(g) },
    committed: [f, g],
  });
  assert.deepEqual(show(over).upload, ["rename a.txt@3 g@5"]);
  // Two identical files moved: paired in path order, deterministically.
  const f2 = cf("a2.txt", 4, "v1", { mtime: 77 });
  const two = plan({
    local: { "x1": lf("v1", { mtime: 77 }), "x2": lf("v1", { mtime: 77 }) },
    synced: { "a.txt": s(f), "a2.txt": s(f2) },
    committed: [f, f2],
  });
  assert.deepEqual(show(two).upload, ["rename a.txt@3 x1@0", "rename a2.txt@4 x2@0"]);
});

Deno.test("reconcile N: a move into a new directory out of a removed one orders mkdir, rename, delete", () => {
  const d = cd("old", 1), f = cf("old/f", 2, "v", { mtime: 5 });
  const p = plan({
    local: { new: ld(), "new/f": lf("v", { mtime: 5 }) },
    synced: { old: s(d), "old/f": s(f) },
    committed: [d, f],
  });
  assert.deepEqual(show(p).upload, ["mkdir new@0", "rename old/f@2 new/f@0", "delete old@1"]);
});

Deno.test("reconcile: a file replaced by a directory, and a directory replaced by a file", () => {
  const f = cf("x", 3, "v");
  const toDir = plan({ local: { x: ld(), "x/in": lf("in") }, synced: { x: s(f) }, committed: [f] });
  assert.deepEqual(show(toDir).upload, ["mkdir x@3", "put x/in@0"]);
  const d = cd("y", 2), c = cf("y/c", 4, "c");
  const toFile = plan({
    local: { y: lf("now a file") },
    synced: { y: s(d), "y/c": s(c) },
    committed: [d, c],
  });
  assert.deepEqual(show(toFile).upload, ["delete y/c@4", "put y@2"]);
});

Deno.test("reconcile T1: a remotely deleted directory holding new local content is kept", () => {
  const d = cd("d", 1), f = cf("d/f", 2, "f");
  const p = plan({
    local: { d: ld(), "d/f": lf("f"), "d/new": lf("new") },
    synced: { d: s(d), "d/f": s(f) },
    committed: [tomb(d, 9), tomb(f, 9)],
  });
  assert.deepEqual(show(p), {
    ...EMPTY,
    upload: ["mkdir d@0", "put d/new@0"],
    materialize: ["rm d/f@9"],
  });
  // Without anything to keep inside, the directory goes too, after its contents.
  const q = plan({
    local: { d: ld(), "d/f": lf("f") },
    synced: { d: s(d), "d/f": s(f) },
    committed: [tomb(d, 9), tomb(f, 9)],
  });
  assert.deepEqual(show(q), { ...EMPTY, materialize: ["rm d/f@9", "rm d@9"] });
});

Deno.test("reconcile T1/T4: a directory replaced remotely by a file, with local content inside", () => {
  const d = cd("d", 1), f = cf("d/f", 2, "f");
  const p = plan({
    local: { d: ld(), "d/f": lf("edited") },
    synced: { d: s(d), "d/f": s(f) },
    committed: [cf("d", 9, "file now"), tomb(f, 8)],
  });
  // The local directory is the conflict; nothing below it is planned this round.
  assert.deepEqual(show(p), { ...EMPTY, conflicts: ["d"] });
  assert.equal(p.conflicts[0].local.kind, "dir");
});

Deno.test("reconcile T2: rm -r of a directory whose contents changed remotely restores them", () => {
  const d = cd("d", 1), f = cf("d/f", 2, "f"), g = cf("d/g", 3, "g");
  const p = plan({
    synced: { d: s(d), "d/f": s(f), "d/g": s(g) },
    committed: [d, cf("d/f", 7, "f2"), g, cf("d/new", 8, "n")],
  });
  assert.deepEqual(show(p), {
    ...EMPTY,
    upload: ["delete d/g@3"],
    materialize: ["write d@1", "write d/f@7", "write d/new@8"],
  });
});

Deno.test("reconcile T3: a file replacing a directory whose contents changed remotely is a conflict", () => {
  const d = cd("d", 1), f = cf("d/f", 2, "f");
  const p = plan({
    local: { d: lf("file") },
    synced: { d: s(d), "d/f": s(f) },
    committed: [d, cf("d/f", 7, "f2")],
  });
  assert.deepEqual(show(p), { ...EMPTY, conflicts: ["d"], materialize: ["write d/f@7"] });
});

Deno.test("reconcile P: paths the index refuses are reported, never uploaded", () => {
  const long = "n".repeat(300);
  const p = plan({ local: { [long]: lf("x"), ok: lf("y") } });
  assert.deepEqual(show(p).upload, ["put ok@0"]);
  assert.equal(p.refused.length, 1);
  assert.equal(p.refused[0].path, long);
});

Deno.test("reconcile: materialize order is tombstones children-first, then live parents-first", () => {
  const d = cd("d", 1), f = cf("d/f", 2, "f");
  const p = plan({
    local: { d: ld(), "d/f": lf("f") },
    synced: { d: s(d), "d/f": s(f) },
    committed: [cf("d", 9, "file"), tomb(f, 8), cd("n", 10), cd("n/m", 10), cf("n/m/x", 10, "x")],
  });
  assert.deepEqual(show(p).materialize, [
    "rm d/f@8",
    "write d@9",
    "write n@10",
    "write n/m@10",
    "write n/m/x@10",
  ]);
});

// ---------------------------------------------------------------------------------------------
// Plans against the real state machine

class Cluster {
  #index = 0;
  readonly everCommitted = new Set<string>();
  private constructor(readonly kv: Deno.Kv, readonly state: IndexState) {}
  static async open(): Promise<Cluster> {
    const kv = await Deno.openKv(":memory:");
    return new Cluster(kv, new IndexState(kv));
  }
  async apply(origin: string, ops: FileOp[]) {
    const r = await this.state.apply(++this.#index, encodeCommand({ origin, ops }));
    if (r.ok) {
      for (const op of ops) if (op.op === "put") this.everCommitted.add(contentKey(op));
    }
    return r;
  }
  async committed(): Promise<Map<string, IndexRecord>> {
    const out = new Map<string, IndexRecord>();
    for await (const r of this.state.list({ tombstones: true })) out.set(r.path, r);
    return out;
  }
  close() {
    this.kv.close();
  }
}

function contentKey(x: { kind: string; root: Uint8Array; target?: string }): string {
  return x.kind === "symlink" ? `l:${x.target}` : `f:${toHex(x.root)}`;
}

function localOf(r: IndexRecord): LocalFileRecord {
  const out: LocalFileRecord = {
    kind: r.kind,
    size: r.size,
    mtime: r.mtime,
    mode: r.mode,
    ino: inoCounter++,
    root: r.root,
  };
  if (r.kind === "symlink") out.target = r.target;
  return out;
}

Deno.test("reconcile: planned ops apply cleanly, including case-only renames of directories", async () => {
  const c = await Cluster.open();
  try {
    const put = (path: string, label: string, mtime = 1): FileOp => ({
      op: "put",
      path,
      base: 0,
      kind: "file",
      root: R(label),
      size: 10,
      mode: 0o644,
      mtime,
    });
    assert.ok(
      (await c.apply("A", [put("Dir/x", "x", 5), put("Foo", "foo", 6), put("keep/k", "k")])).ok,
    );
    const committed = await c.committed();
    const synced = new Map([...committed].map(([p, r]) => [p, syncedFromIndex(r)]));
    // Locally: Dir -> dir (case-only rename with contents), Foo -> foo, keep/ -> kept/.
    const local = new Map<string, LocalFileRecord>([
      ["dir", ld()],
      ["dir/x", lf("x", { mtime: 5 })],
      ["foo", lf("foo", { mtime: 6 })],
      ["kept", ld()],
      ["kept/k", lf("k", { mtime: 1 })],
    ]);
    const p = reconcile(local, synced, committed);
    assert.deepEqual(p.conflicts, []);
    const r = await c.apply("B", p.upload);
    assert.ok(r.ok, JSON.stringify(r));
    const after = await c.committed();
    const live = [...after.values()].filter((x) => !x.deleted).map((x) => x.path).sort();
    assert.deepEqual(live, ["dir", "dir/x", "foo", "kept", "kept/k"]);
    assert.ok(
      show(p).upload.includes("rename Foo@1 foo@0"),
      "the file's case-only rename stays a rename",
    );
  } finally {
    c.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Randomized model

/** Deterministic PRNG (mulberry32). */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)],
    chance: (p: number) => next() < p,
  };
}
type Rng = ReturnType<typeof rng>;

const NAMES = ["a", "b", "c", "x"];
function randomPath(r: Rng): string {
  const depth = 1 + r.int(3);
  return Array.from({ length: depth }, () => r.pick(NAMES)).join("/");
}
function parentOf(p: string): string | null {
  const i = p.lastIndexOf("/");
  return i === -1 ? null : p.slice(0, i);
}
function under(p: string, dir: string): boolean {
  return p.startsWith(`${dir}/`);
}

let labelCounter = 0;
function freshLabel(): string {
  return `gen${labelCounter++}`;
}

/** A random edit by another node, planned against the committed index (may be rejected). */
function remoteEdit(r: Rng, committed: Map<string, IndexRecord>, clock: number): FileOp[] {
  const live = [...committed.values()].filter((x) => !x.deleted);
  const files = live.filter((x) => x.kind !== "dir");
  const dirs = live.filter((x) => x.kind === "dir");
  const verOf = (p: string) => {
    const c = committed.get(p);
    return c && !c.deleted ? c.version : 0;
  };
  const putOp = (path: string, label: string, mode = 0o644): PutFile => ({
    op: "put",
    path,
    base: verOf(path),
    kind: "file",
    root: label === "" ? EMPTY_FILE_ROOT : R(label),
    size: label === "" ? 0 : 10,
    mode,
    mtime: clock,
  });
  switch (r.int(8)) {
    case 0:
    case 1:
      return [putOp(randomPath(r), freshLabel())];
    case 2:
      if (files.length === 0) return [];
      return [putOp(r.pick(files).path, freshLabel())];
    case 3: {
      if (files.length === 0) return [];
      const f = r.pick(files);
      return [{ op: "delete", path: f.path, base: f.version }];
    }
    case 4: {
      if (files.length === 0) return [];
      const f = r.pick(files);
      const to = randomPath(r);
      return [{ op: "rename", from: f.path, fromBase: f.version, to, toBase: verOf(to) }];
    }
    case 5: {
      if (dirs.length === 0) return [];
      // rm -r of a directory, children first.
      const d = r.pick(dirs);
      const inside = live.filter((x) => x.path === d.path || under(x.path, d.path));
      inside.sort((a, b) => (a.path < b.path ? 1 : -1));
      return inside.map((x) => ({ op: "delete", path: x.path, base: x.version }));
    }
    case 6: {
      if (files.length === 0) return [];
      const f = r.pick(files);
      if (f.kind !== "file") return [];
      return [{
        ...putOp(f.path, ""),
        root: f.root,
        size: f.size,
        mode: f.mode === 0o644 ? 0o600 : 0o644,
      }];
    }
    default: {
      const path = randomPath(r);
      return r.chance(0.5)
        ? [{ op: "mkdir", path, base: verOf(path), mode: 0o755, mtime: clock }]
        : [{
          op: "put",
          path,
          base: verOf(path),
          kind: "symlink",
          root: EMPTY_FILE_ROOT,
          size: 3,
          mode: 0o777,
          mtime: clock,
          target: `t${labelCounter++}`,
        }];
    }
  }
}

/** A random local edit, keeping the local map a consistent tree (what a scan would see). */
function localEdit(r: Rng, local: Map<string, LocalFileRecord>, clock: number): void {
  const paths = [...local.keys()];
  const files = paths.filter((p) => local.get(p)!.kind !== "dir");
  const dirs = paths.filter((p) => local.get(p)!.kind === "dir");
  const removeTree = (p: string) => {
    for (const q of [...local.keys()]) if (q === p || under(q, p)) local.delete(q);
  };
  /** mkdir -p of p's parents; false if a parent is a file. */
  const mkParents = (p: string): boolean => {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const a = parts.slice(0, i).join("/");
      const cur = local.get(a);
      if (cur && cur.kind !== "dir") return false;
      if (!cur) local.set(a, ld({ mtime: clock }));
    }
    return true;
  };
  const newFile = (): LocalFileRecord =>
    r.chance(0.1)
      ? lf("", { root: EMPTY_FILE_ROOT, size: 0, mtime: clock })
      : lf(freshLabel(), { mtime: clock });
  switch (r.int(11)) {
    case 0:
    case 1: {
      const p = randomPath(r);
      if (local.get(p)?.kind === "dir" || !mkParents(p)) return;
      local.set(p, newFile());
      return;
    }
    case 2:
      if (files.length) local.set(r.pick(files), lf(freshLabel(), { mtime: clock }));
      return;
    case 3:
      if (files.length) local.delete(r.pick(files));
      return;
    case 4: {
      if (!files.length) return;
      const from = r.pick(files);
      const to = randomPath(r);
      if (to === from || under(to, from) || local.get(to)?.kind === "dir") return;
      const rec = local.get(from)!;
      local.delete(from);
      if (!mkParents(to)) {
        local.set(from, rec);
        return;
      }
      local.set(to, { ...rec, ino: inoCounter++ });
      return;
    }
    case 5:
      if (dirs.length) removeTree(r.pick(dirs));
      return;
    case 6: {
      if (!files.length) return;
      const f = r.pick(files);
      const rec = local.get(f)!;
      local.set(
        f,
        r.chance(0.5)
          ? { ...rec, mode: rec.mode === 0o644 ? 0o600 : 0o644 }
          : { ...rec, mtime: clock },
      );
      return;
    }
    case 7: {
      if (!files.length) return;
      const f = r.pick(files);
      local.set(f, ld({ mtime: clock }));
      if (r.chance(0.5)) local.set(`${f}/${r.pick(NAMES)}`, newFile());
      return;
    }
    case 8: {
      if (!dirs.length) return;
      const d = r.pick(dirs);
      removeTree(d);
      local.set(d, newFile());
      return;
    }
    case 9: {
      const p = randomPath(r);
      if (local.get(p)?.kind === "dir" || !mkParents(p)) return;
      local.set(p, ll(`t${labelCounter++}`, { mtime: clock }));
      return;
    }
    default: {
      const p = randomPath(r);
      if (local.has(p) || !mkParents(p)) return;
      local.set(p, ld({ mtime: clock, mode: r.chance(0.5) ? 0o755 : 0o700 }));
    }
  }
}

function sameContentLocal(
  a: LocalFileRecord,
  b: { kind: string; root: Uint8Array; target?: string },
) {
  return a.kind === b.kind &&
    (a.kind === "file"
      ? toHex(a.root) === toHex(b.root)
      : a.kind === "symlink"
      ? a.target === b.target
      : true);
}

/** Local content that was never committed (not as synced, not as the committed entry). */
function uncommitted(
  p: string,
  local: Map<string, LocalFileRecord>,
  synced: Map<string, SyncedRecord>,
  committed: Map<string, IndexRecord>,
): boolean {
  const L = local.get(p);
  if (!L || L.kind === "dir") return false;
  const S = synced.get(p);
  const C = committed.get(p);
  if (S && sameContentLocal(L, S)) return false;
  if (C && !C.deleted && sameContentLocal(L, C)) return false;
  return true;
}

async function runModel(seed: number): Promise<void> {
  const r = rng(seed);
  const c = await Cluster.open();
  try {
    let clock = 1000;
    // A shared starting tree, fully synced on this node.
    for (let i = 0; i < 6; i++) await c.apply("A", remoteEdit(r, await c.committed(), clock++));
    let committed = await c.committed();
    const local = new Map<string, LocalFileRecord>();
    const synced = new Map<string, SyncedRecord>();
    for (const [p, rec] of committed) {
      if (rec.deleted) continue;
      local.set(p, localOf(rec));
      synced.set(p, syncedFromIndex(rec));
    }
    // Concurrent histories: the cluster moves on while this node edits locally.
    const remoteEdits = r.int(6);
    const localEdits = r.int(8);
    for (let i = 0; i < remoteEdits; i++) {
      await c.apply("A", remoteEdit(r, await c.committed(), clock++));
    }
    for (let i = 0; i < localEdits; i++) localEdit(r, local, clock++);

    // Every content on disk now must end up committed (now or in history).
    const mustSurvive = new Set<string>();
    for (const rec of local.values()) if (rec.kind !== "dir") mustSurvive.add(contentKey(rec));

    let quiet = false;
    for (let round = 0; round < 12 && !quiet; round++) {
      committed = await c.committed();
      const p = reconcile(local, synced, committed);
      const ctx = `seed ${seed} round ${round}`;
      quiet = p.upload.length + p.materialize.length + p.conflicts.length + p.adopt.length === 0;

      // Invariant 1: every uncommitted local content is uploaded or kept as a conflict copy.
      const conflictDirs = p.conflicts.filter((x) => x.local.kind === "dir").map((x) => x.path);
      for (const path of local.keys()) {
        if (!uncommitted(path, local, synced, committed)) continue;
        const L = local.get(path)!;
        const kept = p.upload.some((op) =>
          (op.op === "put" && op.path === path && sameContentLocal(L, op)) ||
          (op.op === "rename" && op.to === path)
        ) || p.conflicts.some((x) =>
          x.path === path
        ) || conflictDirs.some((d) => under(path, d));
        assert.ok(kept, `${ctx}: local content at ${path} is neither uploaded nor kept`);
      }
      // Invariant 2: materializing never replaces uncommitted local content, and a removed
      // directory is emptied first.
      for (const rec of p.materialize) {
        assert.ok(
          !uncommitted(rec.path, local, synced, committed),
          `${ctx}: materialize over local edit ${rec.path}`,
        );
      }

      // Apply the plan as the daemon would.
      for (const x of p.conflicts) {
        let n = 1;
        let copy = conflictCopyName(x.path, "B", 0, n);
        while (local.has(copy) || (committed.get(copy) && !committed.get(copy)!.deleted)) {
          copy = conflictCopyName(x.path, "B", 0, ++n);
        }
        for (const q of [...local.keys()].sort()) {
          if (q === x.path || under(q, x.path)) {
            local.set(copy + q.slice(x.path.length), local.get(q)!);
            local.delete(q);
          }
        }
        materializeModel(x.committed, local, synced, ctx);
      }
      for (const rec of p.materialize) materializeModel(rec, local, synced, ctx);
      for (const path of p.adopt) {
        const C = committed.get(path);
        if (C && !C.deleted) synced.set(path, syncedFromIndex(C));
        else synced.delete(path);
      }
      // Sometimes another node commits between planning and proposing.
      const interfere = round < 2 && r.chance(0.3);
      if (interfere) {
        await c.apply("A", remoteEdit(r, await c.committed(), clock++));
        quiet = false;
      }
      // The waves hold exactly the ops of `upload`.
      assert.deepEqual(
        p.uploadWaves.flat().map((op) => JSON.stringify(op)).sort(),
        p.upload.map((op) => JSON.stringify(op)).sort(),
      );
      const record = (op: FileOp, version: number) => {
        for (const { path, rec } of syncedAfterUpload(op, version, local)) {
          if (rec) synced.set(path, rec);
          else synced.delete(path);
        }
      };
      if (p.upload.length > 0 && r.chance(0.5)) {
        // All ops in one command, in the planned order.
        const res = await c.apply("B", p.upload);
        if (res.ok) { for (const op of p.upload) record(op, res.version); }
        else {
          // Only a concurrent commit may make a planned command fail.
          assert.ok(interfere && res.code !== "invalid", `${ctx}: ${res.code} ${res.message}`);
        }
      } else {
        // Wave by wave, each op its own command, in a shuffled order within the wave.
        for (const w of p.uploadWaves) {
          const shuffled = [...w];
          for (let i = shuffled.length - 1; i > 0; i--) {
            const j = r.int(i + 1);
            [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
          }
          for (const op of shuffled) {
            const res = await c.apply("B", [op]);
            if (res.ok) record(op, res.version);
            else {assert.ok(
                interfere && res.code !== "invalid",
                `${ctx}: ${res.code} ${res.message}`,
              );}
          }
        }
      }
    }
    assert.ok(quiet, `seed ${seed}: did not converge`);

    // Convergence: the disk equals the committed index.
    committed = await c.committed();
    const live = [...committed.values()].filter((x) => !x.deleted);
    assert.deepEqual(
      [...local.keys()].sort(),
      live.map((x) => x.path).sort(),
      `seed ${seed}: paths differ`,
    );
    for (const C of live) {
      const L = local.get(C.path)!;
      assert.ok(sameContentLocal(L, C), `seed ${seed}: content of ${C.path}`);
      if (C.kind !== "symlink") assert.equal(L.mode, C.mode, `seed ${seed}: mode of ${C.path}`);
    }
    // Nothing dropped.
    for (const k of mustSurvive) {
      assert.ok(c.everCommitted.has(k), `seed ${seed}: content ${k} was never committed`);
    }
  } finally {
    c.close();
  }
}

/** What the materializer does, with its safety checks as assertions. */
function materializeModel(
  rec: IndexRecord,
  local: Map<string, LocalFileRecord>,
  synced: Map<string, SyncedRecord>,
  ctx: string,
) {
  const L = local.get(rec.path);
  if (L) {
    const S = synced.get(rec.path);
    const committedContent = (S && sameContentLocal(L, S)) || sameContentLocal(L, rec);
    assert.ok(committedContent, `${ctx}: materializer would refuse ${rec.path} (local edit)`);
  }
  const replacesDir = L?.kind === "dir" && (rec.deleted || rec.kind !== "dir");
  if (replacesDir) {
    const inside = [...local.keys()].filter((q) => under(q, rec.path));
    assert.deepEqual(inside, [], `${ctx}: ${rec.path} is not empty when removed`);
  }
  if (rec.deleted) {
    local.delete(rec.path);
    synced.delete(rec.path);
    return;
  }
  for (let a = parentOf(rec.path); a !== null; a = parentOf(a)) {
    const cur = local.get(a);
    assert.ok(
      !cur || cur.kind === "dir",
      `${ctx}: ancestor ${a} of ${rec.path} is not a directory`,
    );
  }
  for (let a = parentOf(rec.path); a !== null; a = parentOf(a)) {
    if (!local.has(a)) local.set(a, ld());
  }
  local.set(rec.path, localOf(rec));
  synced.set(rec.path, syncedFromIndex(rec));
}

Deno.test("reconcile model: random concurrent histories converge and drop no content", async () => {
  for (let seed = 1; seed <= 400; seed++) await runModel(seed);
});

// ---------------------------------------------------------------------------------------------
// Conflict copy names

Deno.test("conflict names: extension kept, dotfiles and extensionless names, UTC time", () => {
  const t = Date.UTC(2024, 0, 2, 3, 4, 5);
  assert.equal(conflictCopyName("docs/a.txt", "n1", t), "docs/a.conflict-n1-20240102-030405.txt");
  assert.equal(conflictCopyName("Makefile", "n1", t), "Makefile.conflict-n1-20240102-030405");
  assert.equal(conflictCopyName("d/.bashrc", "n1", t), "d/.bashrc.conflict-n1-20240102-030405");
  assert.equal(
    conflictCopyName("x.tar.gz", "n1", new Date(t)),
    "x.tar.conflict-n1-20240102-030405.gz",
  );
  assert.equal(conflictCopyName("end.", "n1", t), "end..conflict-n1-20240102-030405");
  // A "suffix" too long to be an extension is treated as part of the name.
  assert.equal(
    conflictCopyName("a.this-is-not-an-extension", "n1", t),
    "a.this-is-not-an-extension.conflict-n1-20240102-030405",
  );
  assert.equal(conflictCopyName("a.txt", "n1", t, 3), "a.conflict-n1-20240102-030405-3.txt");
  // Node names cannot inject dots, slashes or length.
  assert.equal(
    conflictCopyName("a.txt", "evil/../name.x" + "z".repeat(100), t),
    `a.conflict-evil____name_x${"z".repeat(18)}-20240102-030405.txt`,
  );
  assert.equal(conflictTimestamp(0), "19700101-000000");
  assert.throws(() => conflictCopyName("a", "n", NaN), RangeError);
  assert.throws(() => conflictCopyName("a", "n", 0, 0), RangeError);
});

Deno.test("conflict names: long names are cut to 255 bytes at a character boundary", () => {
  const enc = new TextEncoder();
  const long = "é".repeat(127) + ".md"; // 254 + 3 bytes: at the limit already
  const copy = conflictCopyName(`dir/${long}`, "node", 0, 12);
  const name = copy.slice(4);
  assert.ok(enc.encode(name).length <= 255, `${enc.encode(name).length} bytes`);
  assert.ok(name.endsWith(".conflict-node-19700101-000000-12.md"));
  assert.ok(name.isWellFormed());
  const emoji = "😀".repeat(63) + ".txt";
  const e = conflictCopyName(emoji, "n", 0);
  assert.ok(enc.encode(e).length <= 255 && e.isWellFormed());
  assert.equal(indexPathProblem(copy), null);
});

Deno.test("conflict names: uniqueConflictCopyName counts up past taken names", async () => {
  const taken = new Set([
    "a.conflict-n-19700101-000000.txt",
    "a.conflict-n-19700101-000000-2.txt",
  ]);
  assert.equal(
    await uniqueConflictCopyName("a.txt", "n", 0, (p) => taken.has(p)),
    "a.conflict-n-19700101-000000-3.txt",
  );
  await assert.rejects(
    uniqueConflictCopyName("a.txt", "n", 0, () => Promise.resolve(true)),
    ConflictNameError,
  );
});
