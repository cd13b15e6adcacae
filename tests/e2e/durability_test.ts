/**
 * Durability before commit, pack space, and an idle cluster, with three real processes on
 * 127.0.0.1:
 *  - a change's objects are pushed to a majority before it is proposed, so the origin can die
 *    the moment it committed and the third node still gets the bytes (from the second);
 *  - pushed chunks, once written into their file, leave the packs (no doubled disk use);
 *  - an unchanged tree moves no object, and an idle node uses next to no CPU.
 */
import assert from "node:assert/strict";
import { cpuTicks, waitConverged, waitFor, withCluster } from "../helpers/cluster.ts";
import { runCli } from "../helpers/cli.ts";
import { seededBytes } from "../helpers/bytes.ts";
import { directoryBytes } from "../../src/store/mod.ts";

const TEST = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  ...TEST,
  name: "durability: the origin dies right after committing; the data survives on a majority",
  async fn() {
    await withCluster(async ([a, b, c], nodes) => {
      const data = seededBytes(21, 3 * 1024 * 1024 + 123);
      // C is stopped: the only other holder A can count on is B.
      nodes[2].kill("SIGSTOP");
      await Deno.writeFile(`${a}/payload.bin`, data);
      await waitConverged([a, b], 60_000);
      const sb = await nodes[1].status();
      // B got the objects pushed before the commit, so it fetched nothing to write the file.
      assert.ok(sb.sync.receivedBytes >= data.length, `B received ${sb.sync.receivedBytes}`);
      assert.equal(sb.sync.fetchedBytes, 0);
      // A dies; C comes back and can only get the bytes from B.
      nodes[0].kill("SIGKILL");
      await nodes[0].stop();
      nodes[2].kill("SIGCONT");
      await waitConverged([b, c], 60_000);
      const got = await Deno.readFile(`${c}/payload.bin`);
      assert.ok(got.length === data.length && got.every((v, i) => v === data[i]));
      // B's pushed copies are in its file now: garbage collection takes them out of the packs.
      await waitFor(
        "B's packs to shrink below the file's size",
        async () => (await directoryBytes(`${b}/.filesync/packs`)) < data.length / 4,
        30_000,
        250,
      );
    }, { prefix: "filesync-durable-", extra: ["--gc-interval", "1"] });
  },
});

Deno.test({
  ...TEST,
  name: "durability: without a majority a change is not committed, and it lands later",
  async fn() {
    await withCluster(async ([a, b, c], nodes) => {
      nodes[1].kill("SIGSTOP");
      nodes[2].kill("SIGSTOP");
      await Deno.writeFile(`${a}/alone.bin`, seededBytes(22, 200_000));
      // No peer can confirm the objects (nor the proposal): the change stays pending.
      // Long enough for the node's own read of the committed index to give up (5 s).
      const r = await runCli(["status", a, "--wait", "--timeout", "8"]);
      assert.notEqual(r.code, 0);
      // It says why: the data is not durable on a majority.
      assert.match(r.stderr, /: 1 local changes not committed.*(quorum|majority)/);
      // status says what waits: one file, its bytes, and (once the push gave up) why.
      const st = await nodes[0].status();
      assert.equal(st.sync.pendingUp, 1);
      assert.equal(st.sync.pendingUpBytes, 200_000);
      await waitFor(
        "the reason",
        async () => /majority/.test((await nodes[0].status()).sync.waitingUp ?? ""),
        30_000,
      );
      nodes[1].kill("SIGCONT");
      nodes[2].kill("SIGCONT");
      await waitConverged([a, b, c], 60_000);
      await waitFor(
        "nothing waiting",
        async () => (await nodes[0].status()).sync.waitingUp === null,
        30_000,
      );
    }, { prefix: "filesync-durable-" });
  },
});

Deno.test({
  ...TEST,
  name: "idle: an unchanged tree moves no object and an idle node uses next to no CPU",
  async fn() {
    await withCluster(async ([a, b, c], nodes) => {
      await Deno.writeFile(`${a}/one.bin`, seededBytes(23, 500_000));
      await Deno.writeTextFile(`${b}/two.txt`, "two\n");
      await waitConverged([a, b, c], 60_000);
      for (const d of [a, b, c]) {
        const r = await runCli(["status", d, "--wait", "--timeout", "30"]);
        assert.equal(r.code, 0, r.stderr);
      }
      const moved = async () => {
        let total = 0;
        for (const n of nodes) {
          const s = await n.status();
          total += s.sync.fetchedBytes + s.sync.receivedBytes;
        }
        return total;
      };
      const before = await moved();
      const ticks0 = await Promise.all(nodes.map((n) => cpuTicks(n.pid)));
      // Several rescans (every second, or 100 times a rescan's own cost if that is longer) and
      // explicit sync passes over the unchanged tree.
      await new Promise((r) => setTimeout(r, 5_000));
      const ticks1 = await Promise.all(nodes.map((n) => cpuTicks(n.pid)));
      for (const d of [a, b, c]) await runCli(["status", d, "--wait", "--timeout", "30"]);
      assert.equal(await moved(), before, "object bytes moved while nothing changed");
      // 5 s idle with a rescan every second: well under a tenth of a core each (50 ticks).
      for (let i = 0; i < 3; i++) {
        const used = ticks1[i] - ticks0[i];
        assert.ok(used < 50, `node ${i} used ${used} CPU ticks in 5 s idle`);
      }
    }, { prefix: "filesync-durable-", extra: ["--rescan", "1"] });
  },
});

Deno.test({
  ...TEST,
  name: "gc: a node that was pushed chunks collects garbage; one that only fetched does not",
  async fn() {
    await withCluster(async ([a, b, c], nodes) => {
      // C is stopped while A commits: B alone receives the push, C fetches once it is back.
      nodes[2].kill("SIGSTOP");
      await Deno.writeFile(`${a}/pushed.bin`, seededBytes(24, 600_000));
      await waitConverged([a, b], 60_000);
      nodes[2].kill("SIGCONT");
      await waitConverged([a, b, c], 60_000);
      const [sb, sc] = [await nodes[1].status(), await nodes[2].status()];
      assert.ok(sb.sync.receivedBytes > 0, `B received ${sb.sync.receivedBytes}`);
      assert.equal(sc.sync.receivedBytes, 0);
      assert.ok(sc.sync.fetchedBytes > 0, `C fetched ${sc.sync.fetchedBytes}`);
      // Collection runs every second when there is a reason: B has one, C none (fetched
      // chunks went into its file; a run would walk everything and find nothing).
      await waitFor("B to collect garbage", () => Promise.resolve(/gc pass/.test(nodes[1].stderr)));
      await new Promise((r) => setTimeout(r, 3_000));
      assert.doesNotMatch(nodes[2].stderr, /gc pass/);
    }, { prefix: "filesync-gc-", extra: ["--gc-interval", "1", "--log-level", "debug"] });
  },
});
