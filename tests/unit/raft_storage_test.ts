/**
 * Raft storage: the Deno KV implementation must load back exactly what MemoryStorage (the
 * reference) holds, split big values and big batches within Deno KV's limits, and ignore and
 * clean up whatever a crash between its transactions left behind.
 */
import assert from "node:assert/strict";
import {
  type Compaction,
  type Entry,
  EntryType,
  KvRaftStorage,
  MemoryStorage,
  type PersistedState,
  type Snapshot,
} from "../../src/raft/mod.ts";

const CFG = { voters: ["a", "b", "c"], learners: [] as string[] };

function ent(index: number, term: number, size = 8, fill = index): Entry {
  return { index, term, type: EntryType.Normal, data: new Uint8Array(size).fill(fill & 0xff) };
}

async function withKv(fn: (kv: Deno.Kv) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "raft-kv-" });
  const kv = await Deno.openKv(`${dir}/kv.sqlite`);
  try {
    await fn(kv);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function normalize(s: PersistedState) {
  return {
    hardState: s.hardState,
    offset: s.offset,
    offsetTerm: s.offsetTerm,
    offsetConfig: { voters: [...s.offsetConfig.voters], learners: [...s.offsetConfig.learners] },
    entries: s.entries.map((e) => ({ ...e, data: Array.from(e.data) })),
    snapshot: s.snapshot
      ? {
        meta: {
          ...s.snapshot.meta,
          config: {
            voters: [...s.snapshot.meta.config.voters],
            learners: [...s.snapshot.meta.config.learners],
          },
        },
        data: Array.from(s.snapshot.data),
      }
      : null,
  };
}

Deno.test("raft storage: KV round-trips hard state and entries, and truncates on overwrite", async () => {
  await withKv(async (kv) => {
    const s = new KvRaftStorage(kv, ["raft", "n1"]);
    await s.load();
    await s.save({
      hardState: { term: 2, vote: "a", commit: 2 },
      snapshot: null,
      entries: [ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2), ent(5, 2)],
    });
    await s.save({
      hardState: { term: 3, vote: "b", commit: 2 },
      snapshot: null,
      entries: [ent(3, 3, 4, 99)],
    });
    const r = await new KvRaftStorage(kv, ["raft", "n1"]).load();
    assert.deepEqual(r.hardState, { term: 3, vote: "b", commit: 2 });
    assert.deepEqual(r.entries.map((e) => [e.index, e.term]), [[1, 1], [2, 1], [3, 3]]);
    assert.deepEqual(Array.from(r.entries[2].data), [99, 99, 99, 99]);
    // Another prefix is untouched.
    const other = await new KvRaftStorage(kv, ["raft", "n2"]).load();
    assert.equal(other.entries.length, 0);
  });
});

Deno.test("raft storage: KV splits large entries, snapshots and batches within Deno KV limits", async () => {
  await withKv(async (kv) => {
    const s = new KvRaftStorage(kv, ["r"]);
    await s.load();
    const many: Entry[] = [];
    for (let i = 1; i <= 2500; i++) many.push(ent(i, 1, 100));
    many.push({
      index: 2501,
      term: 1,
      type: EntryType.Normal,
      data: new Uint8Array(300_000).fill(7),
    });
    await s.save({ hardState: { term: 1, vote: "", commit: 2501 }, snapshot: null, entries: many });
    const snap: Snapshot = {
      meta: { index: 3000, term: 4, config: CFG },
      data: new Uint8Array(2_000_000).map((_, i) => i % 251),
    };
    const before = await new KvRaftStorage(kv, ["r"]).load();
    assert.equal(before.entries.length, 2501);
    assert.equal(before.entries[2500].data.length, 300_000);
    await s.save({
      hardState: { term: 4, vote: "", commit: 3000 },
      snapshot: snap,
      entries: [ent(3001, 4)],
    });
    const r = await new KvRaftStorage(kv, ["r"]).load();
    assert.equal(r.offset, 3000);
    assert.equal(r.offsetTerm, 4);
    assert.deepEqual(r.entries.map((e) => e.index), [3001]);
    assert.deepEqual(r.snapshot!.data, snap.data);
    // Old entries and pieces are gone, not just hidden.
    let keys = 0;
    for await (const _ of kv.list({ prefix: ["r", "e"] })) keys++;
    for await (const _ of kv.list({ prefix: ["r", "ep"] })) keys++;
    assert.equal(keys, 1);
  });
});

Deno.test("raft storage: KV compaction records the snapshot and deletes old entries", async () => {
  await withKv(async (kv) => {
    const s = new KvRaftStorage(kv, ["r"]);
    await s.load();
    const es: Entry[] = [];
    for (let i = 1; i <= 50; i++) es.push(ent(i, 1));
    await s.save({ hardState: { term: 1, vote: "", commit: 50 }, snapshot: null, entries: es });
    const c: Compaction = {
      snapshot: { meta: { index: 40, term: 1, config: CFG }, data: new Uint8Array([1, 2, 3]) },
      offset: 30,
      offsetTerm: 1,
      offsetConfig: CFG,
    };
    await s.compact(c);
    const r = await new KvRaftStorage(kv, ["r"]).load();
    assert.equal(r.offset, 30);
    assert.equal(r.entries[0].index, 31);
    assert.equal(r.snapshot!.meta.index, 40);
    let keys = 0;
    for await (const _ of kv.list({ prefix: ["r", "e"] })) keys++;
    assert.equal(keys, 20);
  });
});

Deno.test("raft storage: KV load ignores and removes what an interrupted write left", async () => {
  await withKv(async (kv) => {
    const s = new KvRaftStorage(kv, ["r"]);
    await s.load();
    await s.save({
      hardState: { term: 1, vote: "", commit: 2 },
      snapshot: null,
      entries: [ent(1, 1), ent(2, 1)],
    });
    // As if a crash interrupted a large write: an entry after a hole, orphan pieces of an
    // entry whose header never landed, and pieces of a snapshot the bounds never pointed at.
    await kv.atomic()
      .set(["r", "e", 4], { t: 1, y: 0, d: new Uint8Array(1) })
      .set(["r", "ep", 3, 0], new Uint8Array(10))
      .set(["r", "sd", 1, 0], new Uint8Array(10))
      .commit();
    const r = await new KvRaftStorage(kv, ["r"]).load();
    assert.deepEqual(r.entries.map((e) => e.index), [1, 2]);
    assert.equal(r.snapshot, null);
    let keys = 0;
    for await (const _ of kv.list({ prefix: ["r"] })) keys++;
    assert.equal(keys, 3, "only hs and two entries remain");
  });
});

Deno.test("raft storage: KV matches MemoryStorage over a random sequence of operations", async () => {
  await withKv(async (kv) => {
    let seed = 42;
    const rnd = (n: number) => {
      seed = (seed * 16807) % 2147483647;
      return seed % n;
    };
    const mem = new MemoryStorage();
    let kvs = new KvRaftStorage(kv, ["p"]);
    await kvs.load();
    let term = 1;
    let commit = 0;
    for (let step = 0; step < 200; step++) {
      const st = mem.loadSync();
      const last = st.offset + st.entries.length;
      const op = rnd(10);
      if (op < 6) {
        // Append or overwrite a suffix (never below the commit index).
        const from = Math.max(commit, st.offset) + 1 +
          rnd(Math.max(1, last - Math.max(commit, st.offset) + 1));
        const start = Math.min(from, last + 1);
        if (rnd(3) === 0) term++;
        const es: Entry[] = [];
        for (let i = 0; i < 1 + rnd(30); i++) {
          es.push(ent(start + i, term, rnd(3) === 0 ? 70_000 : 16, step));
        }
        commit = Math.min(start + es.length - 1, commit + rnd(5));
        const u = { hardState: { term, vote: "a", commit }, snapshot: null, entries: es };
        mem.saveSync(u);
        await kvs.save(u);
      } else if (op < 8 && commit > st.offset) {
        const idx = st.offset + 1 + rnd(commit - st.offset);
        const t = st.entries[idx - st.offset - 1].term;
        const c: Compaction = {
          snapshot: {
            meta: { index: idx, term: t, config: CFG },
            data: new Uint8Array(rnd(150_000)).fill(step),
          },
          offset: Math.max(st.offset, idx - rnd(5)),
          offsetTerm: 0,
          offsetConfig: CFG,
        };
        const offTerm = c.offset === st.offset
          ? st.offsetTerm
          : st.entries[c.offset - st.offset - 1].term;
        const cc = { ...c, offsetTerm: offTerm };
        mem.compactSync(cc);
        await kvs.compact(cc);
      } else if (op === 8) {
        term++;
        const idx = Math.max(last, commit) + 1 + rnd(10);
        const snap: Snapshot = {
          meta: { index: idx, term, config: CFG },
          data: new Uint8Array(rnd(100_000)).fill(step),
        };
        commit = idx;
        const u = {
          hardState: { term, vote: "", commit },
          snapshot: snap,
          entries: [ent(idx + 1, term)],
        };
        mem.saveSync(u);
        await kvs.save(u);
      } else if (op === 9) {
        kvs = new KvRaftStorage(kv, ["p"]); // restart
      }
      if (step % 20 === 19 || op === 9) {
        const got = await kvs.load();
        assert.deepEqual(normalize(got), normalize(mem.loadSync()), `step ${step}`);
      }
    }
  });
});

/** A Deno.Kv whose atomic commits start failing after `budget.left` of them: a crash. */
function crashingKv(kv: Deno.Kv, budget: { left: number; used: number }): Deno.Kv {
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = () => {
            if (budget.left-- <= 0) return Promise.reject(new Error("simulated crash"));
            budget.used++;
            return commit();
          };
          return op;
        };
      }
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

Deno.test("raft storage: a crash between the transactions of one large save leaves a safe state", async () => {
  const big = (from: number, to: number, term: number) => {
    const es: Entry[] = [];
    for (let i = from; i <= to; i++) es.push(ent(i, term, 1500, term));
    return es;
  };
  for (const scenario of ["overwrite", "snapshot"] as const) {
    let total = -1;
    for (let k = 0; total < 0 || k <= total; k++) {
      await withKv(async (kv) => {
        const setup = new KvRaftStorage(kv, ["c"]);
        await setup.load();
        await setup.save({
          hardState: { term: 1, vote: "a", commit: 100 },
          snapshot: null,
          entries: big(1, 600, 1),
        });
        const budget = { left: total < 0 ? 1e9 : k, used: 0 };
        const s = new KvRaftStorage(crashingKv(kv, budget), ["c"]);
        await s.load();
        const update = scenario === "overwrite"
          ? {
            hardState: { term: 2, vote: "b", commit: 120 },
            snapshot: null,
            entries: big(300, 1000, 2),
          }
          : {
            hardState: { term: 3, vote: "", commit: 700 },
            snapshot: {
              meta: { index: 700, term: 3, config: CFG },
              data: new Uint8Array(900_000).fill(3),
            },
            entries: big(701, 1200, 3),
          };
        try {
          await s.save(update);
        } catch (e) {
          assert.match((e as Error).message, /simulated crash/);
        }
        if (total < 0) total = budget.used;
        const r = await new KvRaftStorage(kv, ["c"]).load();
        const idx = r.entries.map((e) => e.index);
        idx.forEach((v, i) => assert.equal(v, r.offset + 1 + i, "contiguous log"));
        if (scenario === "overwrite") {
          assert.ok(r.entries.length >= 100, "committed entries survive");
          let sawNew = false;
          for (const e of r.entries) {
            if (e.term === 2) sawNew = true;
            else assert.ok(!sawNew, "no stale entry after a new one");
            if (e.term === 1) assert.ok(e.index <= 600);
          }
        } else if (r.offset === 0) {
          assert.equal(r.snapshot, null);
          assert.ok(r.entries.length >= 100 && r.entries.every((e) => e.term === 1));
        } else {
          assert.equal(r.offset, 700);
          assert.equal(r.snapshot!.data.length, 900_000);
          assert.ok(r.entries.every((e) => e.term === 3));
        }
      });
      if (total <= 1) throw new Error(`scenario ${scenario} fitted one transaction; grow it`);
    }
  }
});
