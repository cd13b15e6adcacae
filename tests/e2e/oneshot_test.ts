/**
 * The one-shot cron/CI mode against a real three-node cluster on 127.0.0.1, played as a CI
 * pipeline: job 1 pushes a build folder, job 2 pulls it into an empty folder elsewhere; a
 * second push of the same folder moves nothing; an edit moves only what changed; a push
 * while two of three nodes are down exits non-zero within its timeout and nothing of it ever
 * becomes visible.
 */
import assert from "node:assert/strict";
import { seededBytes } from "../helpers/bytes.ts";
import { runCli } from "../helpers/cli.ts";
import { tempDirs, treeDigest, waitConverged, waitFor, withCluster } from "../helpers/cluster.ts";

async function writeBuild(root: string): Promise<void> {
  await Deno.mkdir(`${root}/bin`, { recursive: true });
  await Deno.mkdir(`${root}/assets/img`, { recursive: true });
  await Deno.mkdir(`${root}/empty`, { recursive: true });
  // Seeded, so the chunk boundaries (and the bytes an edit moves) are the same every run.
  const big = seededBytes(42, 3 * 1024 * 1024);
  await Deno.writeFile(`${root}/bin/app`, big, { mode: 0o755 });
  for (let i = 0; i < 40; i++) {
    await Deno.writeTextFile(`${root}/assets/img/f${i}.txt`, `asset ${i}\n`.repeat(100 + i));
  }
  await Deno.writeTextFile(`${root}/VERSION`, "1.0.0\n");
  await Deno.symlink("bin/app", `${root}/current`);
}

/** Pull the build into a 1 MiB tmpfs: exit 5, "disk full", nothing half-written left. */
async function pullIntoFullDisk(invite: string): Promise<void> {
  const mnt = await Deno.makeTempDir({ prefix: "filesync-full-" });
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt],
    stderr: "null",
  }).output();
  if (!mount.success) {
    console.warn("full-disk check skipped: cannot mount a tmpfs here");
    await Deno.remove(mnt);
    return;
  }
  try {
    const r = await runCli(["pull", mnt, "--from", invite, "--prefix", "builds/42"]);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /^filesync: error: disk full while writing into .+\n$/);
    const left: string[] = [];
    const walk = async (d: string) => {
      for await (const e of Deno.readDir(d)) {
        if (e.name.startsWith(".filesync-tmp-")) left.push(`${d}/${e.name}`);
        if (e.isDirectory) await walk(`${d}/${e.name}`);
      }
    };
    await walk(mnt);
    assert.deepEqual(left, [], "no temp file left");
  } finally {
    await new Deno.Command("umount", { args: [mnt] }).output();
    await Deno.remove(mnt, { recursive: true });
  }
}

interface PushJson {
  version: number;
  changed: boolean;
  put: number;
  delete: number;
  objectsSent: number;
  bytesSent: number;
}

async function pushJson(
  dir: string,
  invite: string,
  extra: string[] = [],
  env: Record<string, string> = {},
) {
  const r = await runCli(["push", dir, "--to", invite, "--json", ...extra], env);
  return { ...r, summary: r.code === 0 ? JSON.parse(r.stdout) as PushJson : null };
}

async function pullJson(dir: string, invite: string, extra: string[] = []) {
  const r = await runCli(["pull", dir, "--from", invite, "--json", ...extra]);
  return { ...r, summary: r.code === 0 ? JSON.parse(r.stdout) as PullJson : null };
}

interface PullJson {
  version: number;
  removed: number;
  fetchedBytes: number;
  reusedBytes: number;
}

Deno.test({
  name: "oneshot: a CI pipeline pushes a build and a fresh folder pulls it byte for byte",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withCluster(async (dirs, nodes) => {
      const [build, fresh, fresh2] = await tempDirs(3, "filesync-ci-");
      try {
        const inv = await runCli(["invite", dirs[0], "--ttl", "10m"]);
        assert.equal(inv.code, 0, inv.stderr);
        const invite = inv.stdout.trim();
        await writeBuild(build);
        const want = await treeDigest(build);

        // Job 1: push the build folder under builds/42.
        const first = await pushJson(build, invite, ["--prefix", "builds/42"]);
        assert.equal(first.code, 0, first.stderr);
        assert.equal(first.stdout.trim().startsWith("{"), true, "--json prints only JSON");
        assert(first.summary!.changed);
        assert(first.summary!.bytesSent >= 3 * 1024 * 1024, "the build's bytes were sent");
        // Every node materializes it.
        await waitFor(
          "the build on every node",
          async () => {
            for (const d of dirs) {
              const got = await treeDigest(`${d}/builds/42`).catch(() => null);
              if (got?.digest !== want.digest) return false;
            }
            return true;
          },
        );
        await waitConverged(dirs);

        // Job 2: pull into an empty folder on a "fresh machine".
        const pulled = await pullJson(fresh, invite, ["--prefix", "builds/42"]);
        assert.equal(pulled.code, 0, pulled.stderr);
        assert.equal(pulled.summary!.version, first.summary!.version);
        assert.deepEqual((await treeDigest(fresh)).listing, want.listing);
        const mode = (await Deno.stat(`${fresh}/bin/app`)).mode! & 0o777;
        assert.equal(mode, 0o755, "modes survive the round trip");

        // A full disk: a pull into a 1 MiB file system fails with one clear line (exit 5)
        // and leaves no temp file behind. (Needs root to mount; skipped otherwise.)
        await pullIntoFullDisk(invite);

        // The same folder again: nothing proposed, no chunk moved.
        const again = await pushJson(build, invite, ["--prefix", "builds/42"]);
        assert.equal(again.code, 0, again.stderr);
        assert.equal(again.summary!.changed, false);
        assert.equal(again.summary!.objectsSent, 0);
        assert.equal(again.summary!.version, first.summary!.version);

        // A batch too large for one Raft entry (forced here with 4 KiB entries) is staged in
        // parts and committed by one entry: still all or none, and the same tree comes back.
        const staged = await pushJson(build, invite, ["--prefix", "builds/staged"], {
          FILESYNC_PART_BYTES: "4096",
        });
        assert.equal(staged.code, 0, staged.stderr);
        const [fresh3] = await tempDirs(1, "filesync-ci-staged-");
        try {
          const p = await runCli(["pull", fresh3, "--from", invite, "--prefix", "builds/staged"]);
          assert.equal(p.code, 0, p.stderr);
          assert.deepEqual((await treeDigest(fresh3)).listing, want.listing);
          // Every path of the batch carries the one version of the commit-batch entry.
          const versions = new Set<number>();
          for (
            const path of [
              "builds/staged/VERSION",
              "builds/staged/bin/app",
              "builds/staged/assets/img/f39.txt",
            ]
          ) {
            const log = await runCli(["log", dirs[0], path, "--json"]);
            assert.equal(log.code, 0, log.stderr);
            versions.add(JSON.parse(log.stdout)[0].version);
          }
          assert.deepEqual([...versions], [staged.summary!.version]);
        } finally {
          await Deno.remove(fresh3, { recursive: true });
        }

        // An edit of one small file, 4 KiB inside the large one, and a deletion: only the
        // chunks they touched move, up and down.
        await Deno.writeTextFile(`${build}/VERSION`, "1.0.1\n");
        const app = await Deno.open(`${build}/bin/app`, { write: true });
        await app.seek(1_500_000, Deno.SeekMode.Start);
        await app.write(new Uint8Array(4096).fill(0xab));
        app.close();
        await Deno.remove(`${build}/assets/img/f0.txt`);
        const edit = await pushJson(build, invite, ["--prefix", "builds/42", "--delete"]);
        assert.equal(edit.code, 0, edit.stderr);
        assert.equal(edit.summary!.put, 2);
        assert.equal(edit.summary!.delete, 1);
        // The touched chunks only (chunks are at most 256 KiB), far from the 3 MiB file.
        assert.ok(edit.summary!.bytesSent < 1 << 20, `sent ${edit.summary!.bytesSent} bytes`);
        const repull = await pullJson(fresh, invite, ["--prefix", "builds/42"]);
        assert.equal(repull.code, 0, repull.stderr);
        const rp = repull.summary!;
        assert.equal(rp.removed, 1);
        assert.ok(rp.fetchedBytes < 1 << 20, `fetched ${rp.fetchedBytes} bytes`);
        assert.ok(rp.reusedBytes > 2 * 1024 * 1024, `reused ${rp.reusedBytes} bytes`);
        assert.equal((await treeDigest(fresh)).digest, (await treeDigest(build)).digest);
        const quiet = await runCli(["pull", fresh, "--from", invite, "--prefix", "builds/42"]);
        assert.equal(quiet.code, 0, quiet.stderr);
        assert.equal(quiet.stdout, "", "silent off a terminal");

        // An older version stays addressable: pull the first push by its version number.
        const old = await runCli([
          "pull",
          fresh2,
          "--from",
          invite,
          "--prefix",
          "builds/42",
          "--at",
          String(first.summary!.version),
        ]);
        assert.equal(old.code, 0, old.stderr);
        assert.equal((await treeDigest(fresh2)).digest, want.digest);

        // Two of three nodes down: the push fails within its timeout, and nothing of it shows.
        const before = await treeDigest(dirs[0]);
        nodes[1].kill("SIGSTOP");
        nodes[2].kill("SIGSTOP");
        await Deno.writeTextFile(`${build}/VERSION`, "2.0.0\n");
        await Deno.writeFile(`${build}/bin/extra`, new Uint8Array(200_000).fill(7));
        const t0 = Date.now();
        const failed = await pushJson(build, invite, ["--prefix", "builds/42", "--timeout", "8"]);
        const took = Date.now() - t0;
        assert.equal(failed.code, 3, `exit code 3, got ${failed.code}: ${failed.stderr}`);
        assert.match(failed.stderr, /^filesync: error: .+\n$/);
        // Bounded by the timeout plus process start-up, not by the stopped nodes.
        assert(took < 8_000 + 20_000, `push took ${took} ms`);
        nodes[1].kill("SIGCONT");
        nodes[2].kill("SIGCONT");
        // Give the cluster time to do anything it might still do with the failed batch.
        await waitFor("a leader again", async () => (await nodes[0].status()).leader !== "");
        await new Promise((r) => setTimeout(r, 3_000));
        await waitConverged(dirs);
        assert.equal((await treeDigest(dirs[0])).digest, before.digest, "no trace of the batch");
      } finally {
        for (const d of [build, fresh, fresh2]) await Deno.remove(d, { recursive: true });
      }
    }, { prefix: "filesync-oneshot-" });
  },
});

Deno.test("oneshot: a bad invite and an unreachable cluster fail with one clear line", async () => {
  const [dir] = await tempDirs(1, "filesync-ci-bad-");
  try {
    const bad = await runCli(["push", dir, "--to", "filesync:nonsense", "--timeout", "5"]);
    assert.equal(bad.code, 4, bad.stderr);
    assert.match(bad.stderr, /^filesync: error: bad invite: .+\n$/);
    const missing = await runCli(["pull", dir, "--timeout", "5"]);
    assert.equal(missing.code, 2, "usage error without --from");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
