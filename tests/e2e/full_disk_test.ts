/**
 * A full disk on a member, with two real processes on 127.0.0.1 (B's folder on a small tmpfs,
 * so the test needs root to mount it; it is skipped, with a message, where it cannot):
 *  - B keeps running, and A's changes wait uncommitted (their data is not durable on a
 *    majority), neither lost nor half-applied;
 *  - A says why, in `status`, in `status --wait`'s failure line and once in its log;
 *  - once B has room again (twice the new data: pack copies, then files), everything lands and
 *    the two folders are identical.
 */
import assert from "node:assert/strict";
import { NodeProcess, tempDirs, treeDigest, waitFor } from "../helpers/cluster.ts";
import { runCli } from "../helpers/cli.ts";
import { seededBytes } from "../helpers/bytes.ts";

const TEST = { sanitizeOps: false, sanitizeResources: false };
const FILES = 12;

async function run(cmd: string, args: string[]): Promise<boolean> {
  return (await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output()).success;
}

Deno.test({
  ...TEST,
  name: "full disk: a member out of space holds changes back, says why, and catches up",
  async fn() {
    const [a] = await tempDirs(1, "filesync-full-a-");
    const b = await Deno.makeTempDir({ prefix: "filesync-full-b-" });
    if (!await run("mount", ["-t", "tmpfs", "-o", "size=24m", "tmpfs", b])) {
      console.warn("full-disk check skipped: cannot mount a tmpfs here");
      await Deno.remove(a, { recursive: true });
      await Deno.remove(b);
      return;
    }
    const nodes: NodeProcess[] = [];
    try {
      nodes.push(await NodeProcess.start(a));
      const invite = (await runCli(["invite", a])).stdout.trim();
      nodes.push(await NodeProcess.start(b, ["--join", invite]));
      const [nodeA, nodeB] = nodes;
      await waitFor(
        "B to vote",
        async () => (await nodeA.status()).members.filter((m) => m.role === "voter").length === 2,
        60_000,
      );
      // B's file system fills up (dd stops at ENOSPC).
      await run("bash", ["-c", `dd if=/dev/zero of=${b}/.filler bs=64k 2>/dev/null; true`]);
      for (let i = 0; i < FILES; i++) {
        await Deno.writeFile(`${a}/f${i}.bin`, seededBytes(2 * i + 1, 1 << 20));
      }
      await waitFor(
        "A to say why its changes wait",
        async () => /No space left/.test((await nodeA.status()).sync.waitingUp ?? ""),
        60_000,
      );
      const st = await nodeA.status();
      assert.equal(st.sync.pendingUp, FILES, "every file waits, none committed");
      const wait = await runCli(["status", a, "--wait", "--timeout", "2"]);
      assert.notEqual(wait.code, 0);
      assert.match(
        wait.stderr,
        new RegExp(`: ${FILES} local changes not committed \\(.*No space left`),
      );
      assert.equal(
        nodeA.stderr.split("\n").filter((l) => l.includes("local changes wait")).length,
        1,
        "warned once, not once per pass",
      );
      // B is alive and answers; nothing of the new files is visible there.
      assert.ok((await nodeB.status()).peerId);
      for (let i = 0; i < FILES; i++) {
        assert.equal(await Deno.stat(`${b}/f${i}.bin`).then(() => true, () => false), false);
      }

      // Room again. Pushed data lands in B's packs before its files, and a pack copy a pusher
      // was told about is kept up to an hour (daemon.ts, CLAIM_KEEP_MS): room for twice the
      // data, as the README says.
      await Deno.remove(`${b}/.filler`);
      assert.ok(await run("mount", ["-o", "remount,size=64m", b]));
      await waitFor(
        "the folders to match",
        async () => {
          const [da, db] = await Promise.all([treeDigest(a), treeDigest(b)]);
          return da.digest === db.digest;
        },
        90_000,
        500,
      );
      await waitFor("nothing left waiting", async () => {
        const s = (await nodeA.status()).sync;
        return s.pendingUp === 0 && s.waitingUp === null;
      }, 30_000);
    } catch (e) {
      for (const n of nodes) {
        console.error(`--- log of ${n.dir}:\n${n.stderr.split("\n").slice(-30).join("\n")}`);
      }
      throw e;
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
      await run("umount", [b]);
      await Deno.remove(b, { recursive: true }).catch(() => {});
      await Deno.remove(a, { recursive: true }).catch(() => {});
    }
  },
});
