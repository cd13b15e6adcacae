/**
 * Pending proposals: a committed entry that is the outcome of this node's own pending proposal
 * brings the synced state up to it; anything else leaves the synced state alone, and records
 * that can no longer come true, or cannot be read, are dropped.
 */
import assert from "node:assert/strict";
import { sha256 } from "../../src/chunk/mod.ts";
import type { FileOp, IndexRecord } from "../../src/fsm/mod.ts";
import { KvBatch, type LocalFileRecord } from "../../src/store/mod.ts";
import { PENDING_PREFIX, PendingProposals } from "../../src/sync/pending_proposals.ts";
import { SyncedState } from "../../src/sync/synced_state.ts";

const ROOT_A = sha256(new TextEncoder().encode("a"));
const ROOT_B = sha256(new TextEncoder().encode("b"));

function put(path: string, root: Uint8Array): FileOp {
  return { op: "put", path, base: 0, kind: "file", root, size: 1, mode: 0o644, mtime: 1000 };
}

function committed(path: string, version: number, origin: string, root: Uint8Array): IndexRecord {
  return {
    path,
    version,
    kind: "file",
    root,
    size: 1,
    mode: 0o644,
    mtime: 1000,
    deleted: false,
    origin,
  };
}

/** A committed index of fixed records at applied index `applied`. */
function indexOf(records: IndexRecord[], applied: number) {
  const byPath = new Map(records.map((r) => [r.path, r]));
  return {
    applied: () => Promise.resolve(applied),
    get: (path: string) => Promise.resolve(byPath.get(path) ?? null),
  };
}

async function pendingKeys(kv: Deno.Kv): Promise<Deno.KvKey[]> {
  const out: Deno.KvKey[] = [];
  for await (const e of kv.list({ prefix: PENDING_PREFIX })) out.push(e.key);
  return out;
}

async function withKv(fn: (kv: Deno.Kv) => Promise<void>): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  try {
    await fn(kv);
  } finally {
    kv.close();
  }
}

const NO_LOCAL = new Map<string, LocalFileRecord>();

Deno.test("pending: the node's own commit of the proposed content becomes the synced state", async () => {
  await withKv(async (kv) => {
    const pending = new PendingProposals(kv);
    const synced = new SyncedState(kv);
    await pending.record([put("a", ROOT_A), put("b", ROOT_B)], NO_LOCAL, 4, new KvBatch(kv));
    // "a" committed as proposed; "b" not yet.
    const index = indexOf([committed("a", 7, "me", ROOT_A)], 7);
    const changed = await pending.recover(index, synced, "me", new KvBatch(kv));
    assert.deepEqual(changed, ["a"]);
    assert.equal((await synced.get("a"))?.version, 7);
    assert.equal(await synced.get("b"), null);
    assert.deepEqual((await pendingKeys(kv)).map((k) => k[1]), ["b"]);
  });
});

Deno.test("pending: another node's commit, other content, or an older version is not ours", async () => {
  await withKv(async (kv) => {
    const pending = new PendingProposals(kv);
    const synced = new SyncedState(kv);
    await pending.record(
      [put("x", ROOT_A), put("y", ROOT_A), put("z", ROOT_A)],
      NO_LOCAL,
      4,
      new KvBatch(kv),
    );
    const index = indexOf([
      committed("x", 7, "other", ROOT_A), // same content, someone else's: not ours
      committed("y", 7, "me", ROOT_B), // ours, but other content (a restore, say)
      committed("z", 3, "me", ROOT_A), // committed before the proposal was made
    ], 7);
    assert.deepEqual(await pending.recover(index, synced, "me", new KvBatch(kv)), []);
    for (const p of ["x", "y", "z"]) assert.equal(await synced.get(p), null);
    // x's proposal can no longer pass its compare-and-swap: dropped. y's and z's may still.
    const left = (await pendingKeys(kv)).map((k) => k[1]);
    assert.deepEqual(left, ["y", "z"]);
  });
});

Deno.test("pending: a record that cannot be read is dropped, not fatal", async () => {
  await withKv(async (kv) => {
    const pending = new PendingProposals(kv);
    await kv.set([...PENDING_PREFIX, "a", 12345], { after: 1, rec: null });
    await kv.set([...PENDING_PREFIX, "b", "file"], { nonsense: true });
    await pending.recover(indexOf([], 1), new SyncedState(kv), "me", new KvBatch(kv));
    assert.deepEqual(await pendingKeys(kv), []);
  });
});

Deno.test("pending: forgotten paths (a restore of them) are not taken for the node's own upload", async () => {
  await withKv(async (kv) => {
    const pending = new PendingProposals(kv);
    const synced = new SyncedState(kv);
    await pending.record([put("a", ROOT_A), put("b", ROOT_A)], NO_LOCAL, 4, new KvBatch(kv));
    await pending.forget(["a"], new KvBatch(kv));
    // The restore commits the same content at "a", from this node.
    const index = indexOf([committed("a", 7, "me", ROOT_A), committed("b", 7, "me", ROOT_A)], 7);
    assert.deepEqual(await pending.recover(index, synced, "me", new KvBatch(kv)), ["b"]);
    assert.equal(await synced.get("a"), null);
  });
});
