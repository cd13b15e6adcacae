/**
 * The one-shot CI mode on the anchor's workload (388 MiB: 1,000 small files, 20 of 1-8 MiB and
 * one of 256 MiB), against rsync in the same run:
 *   - push of the whole folder to a three-node cluster on 127.0.0.1 (exit 0 = committed and
 *     durable on a majority), then a pull of it into an empty folder;
 *   - the same push again (nothing changed);
 *   - 4 KiB overwritten in the middle of the large file: push, then re-pull into the folder.
 * rsync baseline: `rsync -a` to an empty folder, again unchanged, and the edit with
 * `--no-whole-file` (its delta algorithm; local copies skip it by default), bytes from --stats.
 *
 * Usage: deno task bench:oneshot [--large-mib 256]
 */
import { startCluster, tempDirs } from "../tests/helpers/cluster.ts";
import { runCli } from "../tests/helpers/cli.ts";
import { arg, generateWorkload, sh } from "./workload.ts";

const LARGE_MIB = Number(arg("large-mib", "256"));

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const r = await fn();
  return [(performance.now() - t0) / 1000, r];
}

async function cli(args: string[]): Promise<Record<string, number>> {
  const r = await runCli(args);
  if (r.code !== 0) throw new Error(`${args[0]} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** rsync's "Total bytes sent" from --stats. */
function rsyncSent(stats: string): number {
  const m = /Total bytes sent: ([\d,]+)/.exec(stats);
  return m ? Number(m[1].replaceAll(",", "")) : NaN;
}

async function overwrite4k(path: string, seed: number): Promise<void> {
  const f = await Deno.open(path, { write: true });
  const size = (await f.stat()).size;
  await f.seek(Math.floor(size / 2), Deno.SeekMode.Start);
  const bytes = new Uint8Array(4096);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (seed * 31 + i * 7) & 0xff;
  await f.write(bytes);
  f.close();
}

const [work, dirA, dirB, dirC, out, rsyncDst] = await tempDirs(6, "filesync-oneshot-bench-");
const src = `${work}/src`;
try {
  await generateWorkload(src, LARGE_MIB);
  const large = (await sh(["find", src, "-size", `+${LARGE_MIB - 1}M`, "-type", "f"])).trim();
  const nodes = await startCluster([dirA, dirB, dirC]);
  const rows: string[][] = [];
  try {
    const invite = (await runCli(["invite", dirA, "--ttl", "1h"])).stdout.trim();
    const push = () => cli(["push", src, "--to", invite, "--prefix", "build", "--json"]);
    const pull = () => cli(["pull", out, "--from", invite, "--prefix", "build", "--json"]);

    const converged = () =>
      Promise.all(
        [dirA, dirB, dirC].map((d) => runCli(["status", d, "--wait", "--timeout", "600"])),
      );
    const [tPush, p1] = await timed(push);
    // The pull is timed on a quiet cluster: every node first writes the pushed tree.
    const [tConverged] = await timed(converged);
    const [tPull, q1] = await timed(pull);
    const [tAgain, p2] = await timed(push);
    const [rsyncInitial] = await timed(() => sh(["rsync", "-a", `${src}/`, `${rsyncDst}/`]));
    const [rsyncAgain] = await timed(() => sh(["rsync", "-a", `${src}/`, `${rsyncDst}/`]));
    await overwrite4k(large, 1);
    const [tEdit, p3] = await timed(push);
    await converged();
    const [tRepull, q2] = await timed(pull);
    const [rsyncEdit, stats] = await timed(() =>
      sh(["rsync", "-a", "--no-whole-file", "--stats", `${src}/`, `${rsyncDst}/`])
    );
    const mib = (n: number) => `${(n / 1048576).toFixed(2)} MiB`;
    rows.push(
      [
        "push, whole folder",
        `${tPush.toFixed(2)} s, ${mib(p1.bytesSent)}`,
        `${rsyncInitial.toFixed(2)} s`,
      ],
      ["every node has written it (after the push returned)", `+${tConverged.toFixed(2)} s`, "-"],
      ["pull into an empty folder", `${tPull.toFixed(2)} s, ${mib(q1.fetchedBytes)}`, "-"],
      [
        "push, unchanged",
        `${tAgain.toFixed(2)} s, ${mib(p2.bytesSent)}`,
        `${rsyncAgain.toFixed(2)} s`,
      ],
      [
        "push after a 4 KiB overwrite",
        `${tEdit.toFixed(2)} s, ${mib(p3.bytesSent)}`,
        `${rsyncEdit.toFixed(2)} s, ${mib(rsyncSent(stats))}`,
      ],
      [
        "re-pull after it",
        `${tRepull.toFixed(2)} s, ${mib(q2.fetchedBytes)} fetched, ${mib(q2.reusedBytes)} reused`,
        "-",
      ],
    );
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
  }
  console.log(`\nOne-shot push/pull, ${LARGE_MIB} MiB large file (3-node cluster on 127.0.0.1)\n`);
  console.log("| case | FileSync | rsync (local, no daemon) |");
  console.log("|---|---|---|");
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
} finally {
  for (const d of [work, dirA, dirB, dirC, out, rsyncDst]) {
    await Deno.remove(d, { recursive: true }).catch(() => {});
  }
}
