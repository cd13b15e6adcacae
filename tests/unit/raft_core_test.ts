/**
 * Targeted behaviour of the pure Raft core, on a tiny synchronous cluster with perfect
 * delivery (the randomised fault coverage lives in tests/sim).
 */
import assert from "node:assert/strict";
import {
  bootstrapState,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  RaftCore,
  RaftError,
  RaftRole,
} from "../../src/raft/mod.ts";
import { MemoryStorage } from "../../src/raft/mod.ts";

const enc = new TextEncoder();

class Cluster {
  cores = new Map<string, RaftCore>();
  storage = new Map<string, MemoryStorage>();
  applied = new Map<string, Entry[]>();
  reads = new Map<string, { index: number; ctx: string }[]>();
  cut = new Set<string>();
  queue: Message[] = [];
  seed = 1;

  constructor(ids: string[], opts: Partial<ConstructorParameters<typeof RaftCore>[0]> = {}) {
    for (const id of ids) {
      this.storage.set(id, new MemoryStorage(bootstrapState(ids)));
      this.applied.set(id, []);
      this.reads.set(id, []);
      this.start(id, opts);
    }
  }

  random = () => {
    this.seed = (this.seed * 16807) % 2147483647;
    return this.seed / 2147483647;
  };

  start(id: string, opts: Partial<ConstructorParameters<typeof RaftCore>[0]> = {}): RaftCore {
    const c = new RaftCore(
      { id, random: this.random, ...opts },
      this.storage.get(id)!.loadSync(),
    );
    this.cores.set(id, c);
    this.applied.set(id, []);
    return c;
  }

  core(id: string): RaftCore {
    return this.cores.get(id)!;
  }

  /** Handle readies and deliver messages until quiet (bounded). */
  settle(): void {
    for (let round = 0; round < 1000; round++) {
      let work = false;
      for (const [id, c] of this.cores) {
        while (c.hasReady()) {
          work = true;
          const rd = c.ready();
          this.storage.get(id)!.saveSync(rd);
          this.queue.push(...rd.messages);
          this.applied.get(id)!.push(...rd.committed);
          for (const rs of rd.readStates) {
            this.reads.get(id)!.push({
              index: rs.index,
              ctx: new TextDecoder().decode(rs.context),
            });
          }
          c.advance(rd);
        }
      }
      const q = this.queue;
      this.queue = [];
      for (const m of q) {
        work = true;
        if (this.cut.has(m.from) || this.cut.has(m.to)) continue;
        this.cores.get(m.to)?.step(m);
      }
      if (!work) return;
    }
    throw new Error("cluster did not settle");
  }

  tickAll(n: number): void {
    for (let i = 0; i < n; i++) {
      for (const [id, c] of this.cores) if (!this.cut.has(id)) c.tick();
      this.settle();
    }
  }

  leader(): RaftCore | undefined {
    return [...this.cores.values()].find((c) => c.role === RaftRole.Leader && !this.cut.has(c.id));
  }

  elect(id: string): RaftCore {
    this.core(id).campaign();
    this.settle();
    assert.equal(this.core(id).role, RaftRole.Leader);
    return this.core(id);
  }
}

const data = (s: string) => enc.encode(s);
const texts = (es: Entry[]) =>
  es.filter((e) => e.type === EntryType.Normal && e.data.length).map((e) =>
    new TextDecoder().decode(e.data)
  );

Deno.test("raft core: a 3-node cluster elects one leader and commits proposals everywhere", () => {
  const c = new Cluster(["a", "b", "c"]);
  c.tickAll(30);
  const leaders = [...c.cores.values()].filter((x) => x.role === RaftRole.Leader);
  assert.equal(leaders.length, 1);
  const l = leaders[0];
  l.propose([data("x"), data("y")]);
  c.settle();
  for (const id of ["a", "b", "c"]) assert.deepEqual(texts(c.applied.get(id)!), ["x", "y"]);
  assert.ok(l.status().committed >= 3);
});

Deno.test("raft core: followers forward proposals to the leader", () => {
  const c = new Cluster(["a", "b", "c"]);
  c.elect("a");
  c.core("b").propose(data("from-b"));
  c.settle();
  assert.deepEqual(texts(c.applied.get("c")!), ["from-b"]);
});

Deno.test("raft core: proposals without a known leader are dropped with a typed error", () => {
  const c = new Cluster(["a", "b", "c"]);
  assert.throws(
    () => c.core("a").propose(data("x")),
    (e: unknown) => e instanceof RaftError && e.code === "ProposalDropped",
  );
});

Deno.test("raft core: pre-vote keeps a partitioned node from inflating terms", () => {
  const c = new Cluster(["a", "b", "c"]);
  c.elect("a");
  const term = c.core("a").term;
  c.cut.add("c");
  for (let i = 0; i < 100; i++) c.core("c").tick();
  c.settle();
  assert.equal(c.core("c").term, term, "pre-candidate must not bump its term");
  c.cut.delete("c");
  c.tickAll(5);
  assert.equal(c.core("a").role, RaftRole.Leader);
  assert.equal(c.core("a").term, term);
});

Deno.test("raft core: check-quorum makes an isolated leader step down", () => {
  const c = new Cluster(["a", "b", "c"]);
  c.elect("a");
  c.cut.add("a");
  for (let i = 0; i < 25; i++) {
    c.core("a").tick();
    c.settle();
  }
  assert.notEqual(c.core("a").role, RaftRole.Leader);
});

Deno.test("raft core: a new leader wins only with an up-to-date log", () => {
  const c = new Cluster(["a", "b", "c"]);
  c.elect("a");
  c.cut.add("c");
  c.core("a").propose(data("only-ab"));
  c.settle();
  c.cut.delete("c");
  c.cut.add("a");
  // c's log is behind b's: c cannot win, b can.
  c.core("c").campaign();
  c.settle();
  assert.notEqual(c.core("c").role, RaftRole.Leader);
  for (let i = 0; i < 40 && !c.leader(); i++) c.tickAll(1);
  assert.equal(c.leader()?.id, "b");
});

Deno.test("raft core: fast backtracking repairs a long divergent follower log", () => {
  const c = new Cluster(["a", "b", "c"], { maxSizePerMsg: 1 << 20 });
  const old = c.elect("c");
  c.cut.add("c");
  for (let i = 0; i < 30; i++) old.propose(data(`stale${i}`)); // never replicated
  c.settle();
  for (let i = 0; i < 60 && !c.leader(); i++) c.tickAll(1);
  const l = c.leader()!;
  assert.notEqual(l.id, "c");
  for (let i = 0; i < 50; i++) l.propose(data(`a${i}`));
  c.settle();
  c.cut.clear();
  c.tickAll(5);
  const ref = texts(c.applied.get(l.id)!);
  assert.equal(ref.length, 50);
  assert.deepEqual(texts(c.applied.get("c")!), ref);
  assert.equal(c.core("c").status().lastIndex, l.status().lastIndex);
});

Deno.test("raft core: ReadIndex answers with the commit index after a heartbeat round", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect("a");
  l.propose(data("v1"));
  c.settle();
  l.readIndex(data("r1"));
  c.core("b").readIndex(data("r2"));
  c.settle();
  assert.deepEqual(c.reads.get("a"), [{ index: l.status().committed, ctx: "r1" }]);
  assert.deepEqual(c.reads.get("b"), [{ index: l.status().committed, ctx: "r2" }]);
});

Deno.test("raft core: an isolated leader cannot confirm a read", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect("a");
  c.cut.add("b");
  c.cut.add("c");
  l.readIndex(data("r"));
  c.settle();
  assert.deepEqual(c.reads.get("a"), []);
});

Deno.test("raft core: leader transfer hands leadership to an up-to-date voter", () => {
  const c = new Cluster(["a", "b", "c"]);
  c.elect("a");
  c.core("a").propose(data("x"));
  c.settle();
  c.core("a").transferLeader("c");
  c.settle();
  assert.equal(c.core("c").role, RaftRole.Leader);
  assert.equal(c.core("a").role, RaftRole.Follower);
});

Deno.test("raft core: a lagging follower catches up from a snapshot sent in pieces", () => {
  const c = new Cluster(["a", "b", "c"], { maxSnapshotPiece: 16 });
  const l = c.elect("a");
  c.cut.add("c");
  for (let i = 0; i < 20; i++) l.propose(data(`e${i}`));
  c.settle();
  const snapData = data("state-machine-snapshot-" + "z".repeat(100));
  const comp = l.compact(l.status().applied, snapData, 0);
  c.storage.get("a")!.compactSync(comp);
  assert.equal(l.status().firstIndex, comp.offset + 1);
  c.cut.delete("c");
  let snaps = 0;
  for (let i = 0; i < 60; i++) {
    l.tick();
    for (const [id, core] of c.cores) {
      while (core.hasReady()) {
        const rd = core.ready();
        c.storage.get(id)!.saveSync(rd);
        if (rd.snapshot) {
          snaps++;
          assert.deepEqual(rd.snapshot.data, snapData);
        }
        for (const m of rd.messages) c.queue.push(m);
        core.advance(rd);
      }
    }
    const q = c.queue;
    c.queue = [];
    for (const m of q) c.cores.get(m.to)!.step(m);
  }
  assert.equal(snaps, 1);
  assert.equal(c.core("c").status().committed, l.status().committed);
});

Deno.test("raft core: membership changes go one at a time, learners first", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect("a");
  l.proposeConfChange({ type: "addLearner", node: "d" });
  assert.throws(
    () => l.proposeConfChange({ type: "addLearner", node: "e" }),
    (e: unknown) => e instanceof RaftError && e.code === "ProposalDropped",
  );
  c.settle();
  assert.deepEqual(l.config.learners, ["d"]);
  assert.throws(
    () => l.proposeConfChange({ type: "promote", node: "zz" }),
    (e: unknown) => e instanceof RaftError && e.code === "ConfChangeRejected",
  );
  l.proposeConfChange({ type: "remove", node: "c" });
  c.settle();
  assert.deepEqual(l.config.voters, ["a", "b"]);
  assert.equal(c.core("b").config.voters.length, 2);
});

Deno.test("raft core: a leader that removes itself steps down once the change commits", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect("a");
  l.proposeConfChange({ type: "remove", node: "a" });
  c.settle();
  assert.notEqual(l.role, RaftRole.Leader);
  c.cut.add("a");
  for (let i = 0; i < 40 && !c.leader(); i++) c.tickAll(1);
  assert.ok(["b", "c"].includes(c.leader()!.id));
});

Deno.test("raft core: restart from storage resumes term, vote and log", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect("a");
  l.propose(data("x"));
  c.settle();
  const before = c.core("b").status();
  const b2 = c.start("b");
  const after = b2.status();
  assert.equal(after.term, before.term);
  assert.equal(after.vote, before.vote);
  assert.equal(after.lastIndex, before.lastIndex);
  assert.equal(after.committed, before.committed);
  // Committed entries are handed out again for the (fresh) state machine.
  const rd = b2.ready();
  assert.deepEqual(texts([...rd.committed]), ["x"]);
});

Deno.test("raft core: messages addressed elsewhere are refused", () => {
  const c = new Cluster(["a", "b", "c"]);
  assert.throws(() =>
    c.core("a").step({
      type: MessageType.Heartbeat,
      from: "b",
      to: "z",
      term: 5,
      logTerm: 0,
      index: 0,
      commit: 0,
      entries: [],
      reject: false,
      rejectHint: 0,
      context: null,
      snapshot: null,
    })
  );
});
