/**
 * The node driver over the in-memory transport: proposals resolve with their apply result on
 * whichever node proposed them, reads are linearizable barriers, a new leader takes over when
 * the old one stops, and a node restarted from Deno KV resumes exactly where it was.
 */
import assert from "node:assert/strict";
import {
  type Entry,
  InMemoryNetwork,
  KvRaftStorage,
  MemoryStorage,
  RaftNode,
  type RaftStorage,
  type StateMachine,
  unwrapProposal,
} from "../../src/raft/mod.ts";

class Counter implements StateMachine {
  total = 0;
  log: string[] = [];
  apply(e: Entry): number {
    const s = new TextDecoder().decode(e.data);
    this.log.push(s);
    this.total += Number(s);
    return this.total;
  }
  snapshot(): Promise<Uint8Array> {
    return Promise.resolve(new TextEncoder().encode(JSON.stringify(this.log)));
  }
  restore(data: Uint8Array): Promise<void> {
    this.log = JSON.parse(new TextDecoder().decode(data));
    this.total = this.log.reduce((a, s) => a + Number(s), 0);
    return Promise.resolve();
  }
}

const IDS = ["a", "b", "c"];
const num = (n: number) => new TextEncoder().encode(String(n));

async function waitFor(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function cluster(
  storages: Map<string, RaftStorage>,
  sms: Map<string, Counter>,
  net: InMemoryNetwork,
  ids = IDS,
): Promise<Map<string, RaftNode>> {
  const nodes = new Map<string, RaftNode>();
  for (const id of ids) {
    nodes.set(
      id,
      await RaftNode.start({
        id,
        storage: storages.get(id)!,
        transport: net.transport(id),
        stateMachine: sms.get(id)!,
        bootstrap: IDS,
        // 20 ms ticks: an election needs a 200 ms stall, which a loaded CI machine can still
        // cause, but rarely; 5 ms ticks made a busy moment look like a dead leader.
        tickMs: 20,
        requestTimeoutMs: 3000,
        snapshotEvery: 20,
        keepEntries: 5,
      }),
    );
  }
  return nodes;
}

const leaderOf = (nodes: Map<string, RaftNode>) => [...nodes.values()].find((n) => n.isLeader());

Deno.test("raft node: proposals resolve with apply results on any node; reads are barriers", async () => {
  const net = new InMemoryNetwork();
  const sms = new Map(IDS.map((id) => [id, new Counter()]));
  const nodes = await cluster(new Map(IDS.map((id) => [id, new MemoryStorage()])), sms, net);
  try {
    await waitFor("a leader", () => leaderOf(nodes) !== undefined);
    const follower = [...nodes.values()].find((n) => !n.isLeader())!;
    const results = await Promise.all([1, 2, 3, 4].map((n) => follower.propose(num(n))));
    assert.deepEqual([...results].sort((x, y) => Number(x) - Number(y)).at(-1), 10);
    // After a read barrier on any node, its state machine shows every completed write.
    for (const [id, n] of nodes) {
      const total = await n.read(() => sms.get(id)!.total);
      assert.equal(total, 10);
    }
  } finally {
    for (const n of nodes.values()) await n.stop();
  }
});

Deno.test("raft node: a new leader takes over and snapshots bring a stopped node back", async () => {
  const net = new InMemoryNetwork();
  const sms = new Map(IDS.map((id) => [id, new Counter()]));
  const storages = new Map<string, RaftStorage>(IDS.map((id) => [id, new MemoryStorage()]));
  const nodes = await cluster(storages, sms, net);
  try {
    await waitFor("a leader", () => leaderOf(nodes) !== undefined);
    const old = leaderOf(nodes)!;
    await old.propose(num(1));
    await old.stop();
    nodes.delete(old.id);
    await waitFor("a new leader", () => leaderOf(nodes) !== undefined);
    const l = leaderOf(nodes)!;
    for (let i = 0; i < 60; i++) await l.propose(num(1));
    // Restart the old leader from its storage with a fresh state machine.
    sms.set(old.id, new Counter());
    const back = (await cluster(storages, sms, net, [old.id])).get(old.id)!;
    nodes.set(old.id, back);
    await back.readBarrier();
    assert.equal(sms.get(old.id)!.total, 61);
  } finally {
    for (const n of nodes.values()) await n.stop();
  }
});

Deno.test("raft node: restart from Deno KV resumes the log, term and state", async () => {
  const dir = await Deno.makeTempDir({ prefix: "raft-node-" });
  const kv = await Deno.openKv(`${dir}/kv.sqlite`);
  try {
    const net = new InMemoryNetwork();
    const storages = () =>
      new Map<string, RaftStorage>(IDS.map((id) => [id, new KvRaftStorage(kv, ["raft", id])]));
    let sms = new Map(IDS.map((id) => [id, new Counter()]));
    let nodes = await cluster(storages(), sms, net);
    await waitFor("a leader", () => leaderOf(nodes) !== undefined);
    for (let i = 0; i < 30; i++) await leaderOf(nodes)!.propose(num(2));
    const terms = new Map([...nodes].map(([id, n]) => [id, n.status().term]));
    for (const n of nodes.values()) await n.stop();

    sms = new Map(IDS.map((id) => [id, new Counter()]));
    nodes = await cluster(storages(), sms, new InMemoryNetwork());
    for (const [id, n] of nodes) assert.ok(n.status().term >= terms.get(id)!);
    await waitFor("a leader", () => leaderOf(nodes) !== undefined);
    assert.equal(await leaderOf(nodes)!.propose(num(2)), 62);
    for (const n of nodes.values()) await n.stop();
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("raft node: a restarted node never reuses a proposal number of its previous run", async () => {
  // An entry the previous run proposed can be applied after the restart; with the same number
  // it would resolve the new run's proposal with its own result (seen as a wrongly refused
  // proposal in the chaos test).
  const storage = new MemoryStorage();
  const seqs: number[] = [];
  for (let run = 0; run < 2; run++) {
    const sm = new Counter();
    const node = await RaftNode.start({
      id: "a",
      storage,
      transport: new InMemoryNetwork().transport("a"),
      stateMachine: sm,
      bootstrap: ["a"],
      tickMs: 20,
      requestTimeoutMs: 3000,
    });
    try {
      await waitFor("a leader", () => node.isLeader());
      await node.propose(num(1));
    } finally {
      await node.stop();
    }
    const { entries } = await storage.load();
    const mine = entries.filter((e) => e.data.length > 0 && e.type === 0);
    seqs.push(unwrapProposal(mine.at(-1)!.data).seq);
  }
  assert.ok(seqs[1] > seqs[0], `proposal numbers ${seqs.join(", ")}`);
});

Deno.test("raft node: a learner joins, is promoted, and then votes", async () => {
  const net = new InMemoryNetwork();
  const ids = [...IDS, "d"];
  const sms = new Map(ids.map((id) => [id, new Counter()]));
  const storages = new Map<string, RaftStorage>(ids.map((id) => [id, new MemoryStorage()]));
  const nodes = await cluster(storages, sms, net);
  try {
    await waitFor("a leader", () => leaderOf(nodes) !== undefined);
    await leaderOf(nodes)!.propose(num(5));
    const d = await RaftNode.start({
      id: "d",
      storage: storages.get("d")!,
      transport: net.transport("d"),
      stateMachine: sms.get("d")!,
      tickMs: 20,
      requestTimeoutMs: 3000,
    });
    nodes.set("d", d);
    await nodes.get("a")!.proposeConfChange({ type: "addLearner", node: "d" });
    await waitFor("d to catch up", () => sms.get("d")!.total === 5);
    await nodes.get("b")!.proposeConfChange({ type: "promote", node: "d" });
    await waitFor("d to be a voter", () => d.status().config.voters.includes("d"));
    assert.deepEqual(leaderOf(nodes)!.status().config.voters, ["a", "b", "c", "d"]);
  } finally {
    for (const n of nodes.values()) await n.stop();
  }
});
