/**
 * Cluster membership end to end, with real `filesync serve` processes on 127.0.0.1: three
 * nodes form a cluster through invites; a wrong secret, a used single-use invite and an expired
 * invite are refused with a clear error and change nothing; kill -9 of the leader elects a new
 * one and loses no committed entry; the killed node comes back and catches up.
 */
import assert from "node:assert/strict";
import { formatInvite, parseInvite } from "../../src/net/mod.ts";
import { seededBytes } from "../helpers/bytes.ts";
import { runCli } from "../helpers/cli.ts";
import { NodeProcess, startCluster, type Status, tempDirs, waitFor } from "../helpers/cluster.ts";

function memberIds(s: Status): string[] {
  return s.members.map((m) => m.peerId).sort();
}

Deno.test({
  name: "cluster: three nodes join by invite; bad invites are refused and change nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await tempDirs(5);
    let nodes: NodeProcess[] = [];
    try {
      nodes = await startCluster(dirs);
      const before = await nodes[0].status();
      assert.equal(before.members.length, 3);
      const all = new Set(memberIds(before));
      for (const n of nodes) {
        const s = await n.status();
        assert.equal(s.clusterId, before.clusterId);
        assert.ok(all.has(s.peerId));
      }

      // A joiner with the right cluster and address but a wrong secret.
      const good = parseInvite(nodes[0].invite);
      const forged = formatInvite({ ...good, secret: new Uint8Array(32).fill(7) });
      await assert.rejects(
        NodeProcess.start(dirs[3], ["--join", forged]),
        /secret|refused|rejected/i,
      );

      // A single-use invite admits one node, then never again.
      const once = (await runCli(["invite", dirs[0], "--once"])).stdout.trim();
      const expired = formatInvite({ ...parseInvite(once), expiresAt: Date.now() - 1000 });
      await assert.rejects(NodeProcess.start(dirs[3], ["--join", expired]), /expired/i);
      const d = await NodeProcess.start(dirs[3], ["--join", once]);
      nodes.push(d);
      await assert.rejects(
        NodeProcess.start(dirs[4], ["--join", once]),
        /used already/,
      );
      await waitFor("four members", async () => (await nodes[0].status()).members.length === 4);
      const after = await nodes[0].status();
      const expected = [...all, (await d.status()).peerId].sort();
      assert.deepEqual(memberIds(after), expected, "only the node with the valid invite was added");

      // Removing a member: it leaves every configuration and its streams are refused.
      const dPeer = (await d.status()).peerId;
      const removed = await runCli(["remove", dirs[0], dPeer]);
      assert.equal(removed.code, 0, removed.stderr);
      for (const n of nodes.slice(0, 3)) {
        await waitFor("removal to apply", async () => !memberIds(await n.status()).includes(dPeer));
      }
      await waitFor(
        "a member to refuse the removed peer",
        () =>
          Promise.resolve(nodes.slice(0, 3).some((n) => n.stderr.includes(`non-member ${dPeer}`))),
      );
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
      for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "cluster: kill -9 of the leader elects a new one and loses nothing committed",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await tempDirs(3);
    let nodes: NodeProcess[] = [];
    try {
      nodes = await startCluster(dirs);
      const statuses = await Promise.all(nodes.map(async (n) => ({ n, s: await n.status() })));
      const { n: leader, s: s0 } = statuses.find(({ s }) => s.role === "leader")!;
      const committed = s0.commit;
      assert.ok(committed > 0);
      leader.kill("SIGKILL");
      await leader.stop();
      const survivors = nodes.filter((n) => n !== leader);
      const newLeader = await waitFor(
        "a new leader",
        async () => {
          const s = await survivors[0].status();
          return s.leader && s.leader !== s0.peerId ? s : null;
        },
        15_000,
        100,
      );
      assert.ok(newLeader.term > s0.term);
      for (const n of survivors) {
        const s = await waitFor("survivor to apply", async () => {
          const st = await n.status();
          return st.applied >= committed ? st : null;
        });
        assert.ok(s.commit >= committed, "entries committed before the kill are still there");
        assert.equal(s.members.length, 3);
      }
      // The killed node restarts from its own storage and catches up, on the port it had
      // (it was started with port 0): the address the others know stays right.
      await Deno.writeTextFile(`${leader.dir}/written-while-down.txt`, "pushed at start\n");
      const back = await NodeProcess.start(leader.dir);
      nodes = [...survivors, back];
      assert.deepEqual((await back.status()).addrs, s0.addrs);
      const target = (await survivors[0].status()).commit;
      await waitFor(
        "restarted node catches up",
        async () => (await back.status()).applied >= target,
      );
      // It admits the members it knows, and knows their addresses, from the start: its first
      // push (of the file written while it was down) reaches them at once.
      await waitFor("the file written while down to commit", async () => {
        return (await back.status()).sync.pendingUp === 0 &&
          back.stderr.includes("written-while-down.txt");
      });
      assert.ok(!back.stderr.includes("blocked by gater"), back.stderr);
      assert.ok(!back.stderr.includes("no valid addresses"), back.stderr);
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
      for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "cluster: a joiner becomes a voter only once it holds the data committed before it",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await tempDirs(2);
    const nodes: NodeProcess[] = [];
    try {
      // Enough that writing it takes B a few seconds: a 24 MiB file and 2,000 small ones.
      const big = seededBytes(24, 24 << 20);
      await Deno.writeFile(`${dirs[0]}/big.bin`, big);
      await Deno.mkdir(`${dirs[0]}/many`);
      for (let i = 0; i < 2000; i++) {
        await Deno.writeTextFile(`${dirs[0]}/many/f${i}.txt`, `file ${i}\n`);
      }
      nodes.push(await NodeProcess.start(dirs[0]));
      const committed = await runCli(["status", dirs[0], "--wait", "--timeout", "60"]);
      assert.equal(committed.code, 0, `A's files committed: ${committed.stderr}`);
      nodes.push(await NodeProcess.start(dirs[1], ["--join", nodes[0].invite]));
      await waitFor("B a voter", async () => {
        const s = await nodes[1].status();
        return s.members.filter((m) => m.role === "voter").length === 2;
      }, 60_000);
      // Every file was in place before the promotion was proposed (B's log, in order).
      const log = nodes[1].stderr;
      const promoted = log.indexOf("member promoted");
      assert.ok(promoted > 0, "B logged its promotion");
      for (const name of ["big.bin", ...Array.from({ length: 2000 }, (_, i) => `many/f${i}.txt`)]) {
        const at = log.indexOf(`materialized path=${name} `);
        assert.ok(at >= 0 && at < promoted, `${name} was written before B became a voter`);
      }
      assert.deepEqual(await Deno.readFile(`${dirs[1]}/big.bin`), big);
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
      for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "cluster: a member catching up fetches a large file from the other members, not only its origin",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await tempDirs(3);
    const nodes: NodeProcess[] = [];
    try {
      const big = seededBytes(24, 24 << 20);
      await Deno.writeFile(`${dirs[0]}/big.bin`, big);
      nodes.push(await NodeProcess.start(dirs[0]));
      const committed = await runCli(["status", dirs[0], "--wait", "--timeout", "60"]);
      assert.equal(committed.code, 0, `A's file committed: ${committed.stderr}`);
      nodes.push(await NodeProcess.start(dirs[1], ["--join", nodes[0].invite]));
      await waitFor("B holds the file", async () => {
        const s = await nodes[1].status();
        return s.members.filter((m) => m.role === "voter").length === 2;
      }, 60_000);
      const inv = await runCli(["invite", dirs[0]]);
      nodes.push(await NodeProcess.start(dirs[2], ["--join", inv.stdout.trim()]));
      await waitFor("C holds the file", async () => {
        const s = await nodes[2].status();
        return s.members.filter((m) => m.role === "voter").length === 3;
      }, 60_000);
      assert.deepEqual(await Deno.readFile(`${dirs[2]}/big.bin`), big);
      // C fetched its half first (from A and B at once), then B's half from B: B served part
      // of the file, and A did not send C all of it.
      const [a, b, c] = await Promise.all(nodes.map((n) => n.status()));
      assert.ok(c.sync.fetchedBytes >= big.length, `C fetched ${c.sync.fetchedBytes}`);
      assert.ok(b.sync.servedBytes > 0, "B served some of the file to C");
      assert.ok(a.sync.servedBytes < 2 * big.length, `A served ${a.sync.servedBytes}`);
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
      for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
    }
  },
});
