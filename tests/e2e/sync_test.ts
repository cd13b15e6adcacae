/**
 * The sync engine end to end: three real `filesync serve` processes on 127.0.0.1 keep their
 * directories byte-identical through creates, edits, appends, truncations, deletes, renames,
 * directories and symlinks made on any node; concurrent edits of one file end with one
 * committed version and a conflict copy everywhere; a node that was stopped, cut off or killed
 * catches up and loses none of its edits; kill -9 of the leader during a burst of writes loses
 * no committed write.
 */
import assert from "node:assert/strict";
import { runCli } from "../helpers/cli.ts";
import { cpuTicks, NodeProcess, waitConverged, waitFor, withCluster } from "../helpers/cluster.ts";
import { seededBytes } from "../helpers/bytes.ts";

const TEST = { sanitizeResources: false, sanitizeOps: false };

const bytes = seededBytes;

async function waitInSync(dir: string): Promise<void> {
  const r = await runCli(["status", dir, "--wait", "--timeout", "30"]);
  assert.equal(r.code, 0, `status --wait: ${r.stderr}`);
}

Deno.test({
  ...TEST,
  name: "sync: changes of every kind on any node make all three directories identical",
  async fn() {
    await withCluster(async ([a, b, c]) => {
      await Deno.writeTextFile(`${a}/hello.txt`, "hello\n");
      await Deno.mkdir(`${b}/docs/deep`, { recursive: true });
      await Deno.writeFile(`${b}/docs/deep/big.bin`, bytes(1, 3_000_000));
      await Deno.writeFile(`${c}/empty.bin`, new Uint8Array());
      await Deno.mkdir(`${c}/emptydir`);
      await Deno.symlink("../hello.txt", `${c}/docs-link`);
      let listing = await waitConverged([a, b, c]);
      assert.ok(listing.includes("docs/deep/"));
      assert.ok(listing.some((l) => l.startsWith("docs/deep/big.bin ")));
      assert.ok(listing.includes("docs-link -> ../hello.txt"));
      assert.ok(listing.includes("emptydir/"));

      // Modify, append, truncate, delete, rename (file and directory) from different nodes.
      await Deno.writeTextFile(`${c}/hello.txt`, "hello again\n");
      const f = await Deno.open(`${a}/docs/deep/big.bin`, { append: true });
      await f.write(bytes(2, 100_000));
      f.close();
      await waitConverged([a, b, c]);
      await Deno.truncate(`${b}/docs/deep/big.bin`, 1_000_000);
      await Deno.remove(`${a}/empty.bin`);
      await Deno.rename(`${c}/emptydir`, `${c}/renamed-dir`);
      await Deno.rename(`${b}/hello.txt`, `${b}/docs/hello-moved.txt`);
      listing = await waitConverged([a, b, c]);
      assert.ok(!listing.some((l) => l.startsWith("empty.bin")));
      assert.ok(listing.includes("renamed-dir/"));
      assert.ok(!listing.includes("emptydir/"));
      assert.ok(listing.some((l) => l.startsWith("docs/hello-moved.txt ")));
      assert.equal((await Deno.stat(`${a}/docs/deep/big.bin`)).size, 1_000_000);
      assert.equal(await Deno.readTextFile(`${a}/docs/hello-moved.txt`), "hello again\n");
      await waitInSync(a);
    });
  },
});

Deno.test({
  ...TEST,
  name:
    "sync: one file edited on two nodes at once: one version wins, the other is a conflict copy",
  async fn() {
    await withCluster(async ([a, b, c]) => {
      await Deno.writeTextFile(`${a}/shared.txt`, "base\n");
      await waitConverged([a, b, c]);
      await Promise.all([
        Deno.writeTextFile(`${a}/shared.txt`, "edit from a\n"),
        Deno.writeTextFile(`${b}/shared.txt`, "edit from b\n"),
      ]);
      const listing = await waitFor("a conflict copy everywhere", async () => {
        const l = await waitConverged([a, b, c]);
        return l.some((x) => x.startsWith("shared.conflict-")) ? l : null;
      }, 30_000);
      const copies = listing.filter((x) => x.startsWith("shared.conflict-"));
      assert.equal(copies.length, 1);
      const names = [...Deno.readDirSync(c)].map((e) => e.name).filter((n) =>
        n.startsWith("shared")
      );
      const contents = names.map((n) => Deno.readTextFileSync(`${c}/${n}`)).sort();
      assert.deepEqual(contents, ["edit from a\n", "edit from b\n"], "no edit is lost");
    });
  },
});

Deno.test({
  ...TEST,
  name: "sync: a stopped node catches up; a node cut off from the majority keeps its edits",
  async fn() {
    await withCluster(async ([a, b, c], [na, nb, nc]) => {
      await Deno.writeTextFile(`${a}/start.txt`, "start\n");
      await waitConverged([a, b, c]);
      // c stops (SIGSTOP) while 100 writes happen on a and b.
      nc.kill("SIGSTOP");
      try {
        for (let i = 0; i < 100; i++) {
          await Deno.writeTextFile(`${i % 2 ? a : b}/w${String(i).padStart(3, "0")}.txt`, `${i}\n`);
        }
        await waitConverged([a, b], 60_000);
      } finally {
        nc.kill("SIGCONT");
      }
      let listing = await waitConverged([a, b, c], 60_000);
      assert.equal(listing.filter((l) => /^w\d{3}\.txt /.test(l)).length, 100);

      // Now a is cut off from the majority (b and c stopped): its edit waits as pending...
      nb.kill("SIGSTOP");
      nc.kill("SIGSTOP");
      try {
        await Deno.writeTextFile(`${a}/offline.txt`, "written without quorum\n");
        await new Promise((r) => setTimeout(r, 3000));
        const s = await na.status();
        assert.ok(s.commit >= 1);
      } finally {
        nb.kill("SIGCONT");
        nc.kill("SIGCONT");
      }
      // ...and lands everywhere once the majority is back.
      listing = await waitConverged([a, b, c], 60_000);
      assert.ok(listing.some((l) => l.startsWith("offline.txt ")));
      assert.equal(await Deno.readTextFile(`${c}/offline.txt`), "written without quorum\n");
    });
  },
});

Deno.test({
  ...TEST,
  name: "sync: kill -9 of the leader during a burst of writes loses no committed write",
  async fn() {
    await withCluster(async (dirs, nodes) => {
      const statuses = await Promise.all(nodes.map((n) => n.status()));
      const li = statuses.findIndex((s) => s.role === "leader");
      const others = [0, 1, 2].filter((i) => i !== li);
      // 200 writes from the two followers; the leader dies in the middle.
      const writes = (async () => {
        for (let i = 0; i < 200; i++) {
          const dir = dirs[others[i % 2]];
          await Deno.writeTextFile(
            `${dir}/burst-${String(i).padStart(3, "0")}.txt`,
            `write ${i}\n`,
          );
          if (i % 20 === 0) await new Promise((r) => setTimeout(r, 20));
        }
      })();
      await new Promise((r) => setTimeout(r, 400));
      nodes[li].kill("SIGKILL");
      await nodes[li].stop();
      await writes;
      const listing = await waitConverged(others.map((i) => dirs[i]), 60_000);
      assert.equal(listing.filter((l) => l.startsWith("burst-")).length, 200);
      // The killed leader comes back and converges to the same tree.
      nodes[li] = await NodeProcess.start(dirs[li]);
      await waitConverged(dirs, 60_000);
    });
  },
});

Deno.test({
  ...TEST,
  name: "sync: kill -9 of a node during a large transfer; after restart it converges, no torn file",
  async fn() {
    await withCluster(async ([a, b, c], nodes) => {
      const big = bytes(9, 48 * 1024 * 1024);
      nodes[2].kill("SIGKILL");
      await nodes[2].stop();
      await Deno.writeFile(`${a}/large.bin`, big);
      await waitConverged([a, b], 60_000);
      nodes[2] = await NodeProcess.start(c);
      // Kill it again while it is fetching (shortly after it started), then let it finish.
      await new Promise((r) => setTimeout(r, 300));
      nodes[2].kill("SIGKILL");
      await nodes[2].stop();
      // Whatever is at the path now is either absent or complete: never a torn file.
      try {
        const got = await Deno.readFile(`${c}/large.bin`);
        assert.ok(got.length === big.length && got.every((v, i) => v === big[i]), "torn file");
      } catch (e) {
        assert.ok(e instanceof Deno.errors.NotFound);
      }
      nodes[2] = await NodeProcess.start(c);
      await waitConverged([a, b, c], 90_000);
    });
  },
});

Deno.test({
  ...TEST,
  name:
    "sync: a directory deleted elsewhere that holds ignored files here is kept, without spinning",
  async fn() {
    await withCluster(async ([a, b, c], nodes) => {
      await Deno.writeTextFile(`${a}/.filesyncignore`, "*.log\n");
      await Deno.mkdir(`${a}/logs`);
      await Deno.writeTextFile(`${a}/logs/keep.txt`, "synced\n");
      await waitConverged([a, b, c]);
      // C has a file there that is ignored (never synced); A deletes the directory.
      await Deno.writeTextFile(`${c}/logs/debug.log`, "local only\n");
      await Deno.remove(`${a}/logs`, { recursive: true });
      await waitConverged([a, b]);
      await waitFor("C to remove the synced file", async () => {
        try {
          await Deno.stat(`${c}/logs/keep.txt`);
          return false;
        } catch {
          return true;
        }
      });
      // The ignored file and its directory stay on C, and C does not busy-loop over them.
      assert.equal(await Deno.readTextFile(`${c}/logs/debug.log`), "local only\n");
      const before = await cpuTicks(nodes[2].pid);
      await new Promise((r) => setTimeout(r, 3_000));
      const used = (await cpuTicks(nodes[2].pid)) - before;
      assert.ok(used < 60, `C used ${used} CPU ticks in 3 s`);
      const st = await nodes[2].status();
      assert.equal(st.sync.pendingDown, 1, "the kept directory is reported as not written");
      assert.ok(nodes[2].stderr.includes("directory deleted elsewhere is kept"));
    });
  },
});
