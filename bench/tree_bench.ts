/**
 * A large tree of tiny files on two nodes (127.0.0.1): what a folder of many small files costs,
 * where per-file and per-pass work dominates rather than bytes.
 *   - initial sync: A starts with `--files` files of a few bytes (100 per directory), B joins;
 *     until B holds every file;
 *   - create-to-visible: then `--trials` new files on A, one at a time, each timed until it
 *     exists on B (p50 and max);
 *   - idle CPU: both nodes' CPU over `--idle` seconds once nothing changes (Linux /proc),
 *     after the pack garbage collection the initial sync called for (the nodes run it every
 *     5 s here instead of 60, so it is over before the window opens).
 *
 * Usage: deno task bench:tree [--files 20000] [--trials 8] [--idle 20]
 */
import { NodeProcess, tempDirs, waitFor } from "../tests/helpers/cluster.ts";
import { runCli } from "../tests/helpers/cli.ts";
import { arg } from "./workload.ts";

// Timings of nodes as users run them: no test-only consistency checks.
NodeProcess.checkViews = false;

const FILES = Number(arg("files", "20000"));
const TRIALS = Number(arg("trials", "8"));
const IDLE_S = Number(arg("idle", "20"));
const PER_DIR = 100;

/** Regular files under `root`, the data folder left out. */
async function countFiles(root: string): Promise<number> {
  let n = 0;
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.name === ".filesync") continue;
      if (e.isDirectory) await walk(`${dir}/${e.name}`);
      else if (e.isFile) n++;
    }
  };
  await walk(root);
  return n;
}

/** CPU seconds (user + system) a process has used so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

const [a, b] = await tempDirs(2, "filesync-treebench-");
const nodes: NodeProcess[] = [];
try {
  for (let d = 0; d * PER_DIR < FILES; d++) {
    await Deno.mkdir(`${a}/d${d}`);
    for (let f = 0; f < PER_DIR && d * PER_DIR + f < FILES; f++) {
      await Deno.writeTextFile(`${a}/d${d}/f${f}.txt`, `file ${d}/${f}\n`);
    }
  }
  const t0 = performance.now();
  const gc = ["--gc-interval", "5"];
  nodes.push(await NodeProcess.start(a, gc));
  const invite = (await runCli(["invite", a])).stdout.trim();
  nodes.push(await NodeProcess.start(b, ["--join", invite, ...gc]));
  await waitFor("initial sync", async () => (await countFiles(b)) >= FILES, 1_800_000, 500);
  const initialS = (performance.now() - t0) / 1000;

  await new Promise((r) => setTimeout(r, 3000));
  const latencies: number[] = [];
  for (let i = 0; i < TRIALS; i++) {
    const t = performance.now();
    await Deno.writeTextFile(`${a}/d1/new${i}.txt`, `new ${i}\n`);
    await waitFor(
      "new file on B",
      () => Deno.stat(`${b}/d1/new${i}.txt`).then(() => true, () => false),
      60_000,
      5,
    );
    latencies.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 500));
  }
  const sorted = [...latencies].sort((x, y) => x - y);

  await new Promise((r) => setTimeout(r, 15_000));
  const before = await Promise.all(nodes.map((n) => cpuSeconds(n.pid)));
  await new Promise((r) => setTimeout(r, IDLE_S * 1000));
  const after = await Promise.all(nodes.map((n) => cpuSeconds(n.pid)));
  const idle = after.map((x, i) => (100 * (x - before[i])) / IDLE_S);

  console.log(`\n${FILES} files of a few bytes, ${PER_DIR} per directory, two nodes`);
  console.log(`initial sync               ${initialS.toFixed(1)} s`);
  console.log(
    `create-to-visible          p50 ${percentile(sorted, 0.5).toFixed(0)} ms, max ${
      sorted[sorted.length - 1].toFixed(0)
    } ms (${latencies.map((x) => x.toFixed(0)).join(" ")})`,
  );
  console.log(
    `idle CPU over ${IDLE_S} s        A ${idle[0].toFixed(1)} %, B ${
      idle[1].toFixed(1)
    } % of a core`,
  );
} finally {
  await Promise.all(nodes.map((n) => n.stop()));
  for (const d of [a, b]) await Deno.remove(d, { recursive: true });
}
