/**
 * History on a real three-node cluster: every committed version stays addressable (`log`),
 * cluster-wide snapshot labels name versions, and `restore` brings old bytes back, including a
 * file its origin overwrote in place (the other nodes kept the replaced chunks in their packs).
 */
import assert from "node:assert/strict";
import { runCli } from "../helpers/cli.ts";
import { NodeProcess, tempDirs, waitConverged, waitFor, withCluster } from "../helpers/cluster.ts";
import { seededBytes } from "../helpers/bytes.ts";

interface Version {
  version: number;
  deleted: boolean;
  size: number;
  labels: string[];
}

async function log(dir: string, path: string): Promise<Version[]> {
  const r = await runCli(["log", dir, path, "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

async function cli(args: string[]): Promise<string> {
  const r = await runCli(args);
  assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

Deno.test({
  name: "history: log lists versions, labels name them, restore brings old bytes back",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withCluster(async (dirs) => {
      const [a, b, c] = dirs;
      await Deno.writeTextFile(`${a}/notes.txt`, "first\n");
      await waitConverged(dirs);
      await cli(["status", a, "--wait"]);
      const labelled = JSON.parse(await cli(["snapshot", "create", a, "release-1", "--json"]));
      await Deno.writeTextFile(`${a}/notes.txt`, "second, longer\n");
      await waitConverged(dirs);
      await Deno.remove(`${a}/notes.txt`);
      await waitConverged(dirs);

      const versions = await waitFor("three versions in the log", async () => {
        const v = await log(b, "notes.txt");
        return v.length === 3 ? v : null;
      });
      assert.deepEqual(versions.map((v) => [v.deleted, v.size]), [
        [true, 15],
        [false, 15],
        [false, 6],
      ]);
      assert.deepEqual(versions[2].labels, ["release-1"]);
      assert.ok(versions[2].version <= labelled.version);
      const labels = JSON.parse(await cli(["snapshot", "list", c, "--json"]));
      assert.deepEqual(labels.map((l: { name: string }) => l.name), ["release-1"]);

      // Restore by label, from another node: the deleted file comes back with its old bytes.
      await cli(["restore", c, "notes.txt", "--at", "release-1"]);
      await waitFor("the restored file everywhere", async () => {
        for (const d of dirs) {
          if ((await Deno.readTextFile(`${d}/notes.txt`).catch(() => "")) !== "first\n") {
            return false;
          }
        }
        return true;
      });

      // A file overwritten in place on its origin: its old chunks survive on the other nodes.
      const old = seededBytes(11, 1_500_000);
      await Deno.writeFile(`${b}/data.bin`, old);
      await waitConverged(dirs);
      const [v1] = await log(a, "data.bin");
      // Let GC (every second here) drop the copies pushed before the commit: from now on the
      // old bytes live only in the files, until they are replaced.
      await new Promise((r) => setTimeout(r, 3_000));
      await Deno.writeFile(`${b}/data.bin`, seededBytes(12, 1_500_000));
      await waitConverged(dirs);
      await waitFor(
        "two versions of data.bin",
        async () => (await log(a, "data.bin")).length === 2,
      );
      await cli(["restore", b, "data.bin", "--at", String(v1.version)]);
      await waitFor("old bytes of data.bin everywhere", async () => {
        for (const d of dirs) {
          const got = await Deno.readFile(`${d}/data.bin`).catch(() => new Uint8Array());
          if (got.length !== old.length || !got.every((x, i) => x === old[i])) return false;
        }
        return true;
      });

      // A one-shot pull by label gets the labelled tree.
      const [out] = await tempDirs(1, "filesync-history-pull-");
      try {
        const invite = (await cli(["invite", a, "--ttl", "5m"])).trim();
        await cli(["pull", out, "--from", invite, "--at", "release-1"]);
        assert.equal(await Deno.readTextFile(`${out}/notes.txt`), "first\n");
        await assert.rejects(Deno.stat(`${out}/data.bin`), Deno.errors.NotFound);
      } finally {
        await Deno.remove(out, { recursive: true });
      }

      // Problems are one clear line each.
      const none = await runCli(["restore", a, "nothing.txt", "--at", "1"]);
      assert.equal(none.code, 1);
      assert.match(none.stderr, /did not exist at version 1/);
      const bad = await runCli(["restore", a, "x", "--at", "no-such-label"]);
      assert.match(bad.stderr, /not a version number, a snapshot label or a time/);
      const escape = await runCli(["log", a, "../etc/passwd"]);
      assert.equal(escape.code, 1);
      assert.match(escape.stderr, /invalid path/);
    }, { prefix: "filesync-history-", extra: ["--gc-interval", "1"] });
  },
});

Deno.test({
  name: "history: the leader prunes versions past the retention rule, labels pin theirs",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const [dir] = await tempDirs(1, "filesync-prune-");
    const node = await NodeProcess.start(dir, [
      "--keep-versions",
      "1",
      "--keep-days",
      "0",
      "--prune-interval",
      "1",
    ]);
    try {
      await Deno.writeTextFile(`${dir}/f.txt`, "one\n");
      await waitFor("version 1", async () => (await log(dir, "f.txt")).length >= 1);
      await cli(["snapshot", "create", dir, "keep-me"]);
      for (const text of ["two\n", "three\n", "four\n"]) {
        await Deno.writeTextFile(`${dir}/f.txt`, text);
        await cli(["status", dir, "--wait"]);
      }
      // Only the current version and the labelled one stay.
      const left = await waitFor("old versions pruned", async () => {
        const v = await log(dir, "f.txt");
        return v.length === 2 ? v : null;
      });
      assert.deepEqual(left.map((v) => v.size), [5, 4]);
      assert.deepEqual(left[1].labels, ["keep-me"]);
    } finally {
      await node.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
