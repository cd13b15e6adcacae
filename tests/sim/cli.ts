/**
 * Simulation runner: `deno task sim --seed N` replays one seed verbosely;
 * `deno task sim --seeds N [--start S]` runs a campaign; `--nodes 3|5|7` picks the cluster size
 * (default: all three in turn); `--unsafe commit|vote` switches on a deliberately wrong rule.
 */
import { Command } from "commander";
import { type SimReport, simulate } from "./cluster.ts";
import type { UnsafeOptions } from "../../src/raft/mod.ts";

const program = new Command()
  .name("sim")
  .option("--seed <n>", "replay one seed")
  .option("--seeds <n>", "number of seeds to run", "100")
  .option("--start <n>", "first seed of a campaign", "1")
  .option("--nodes <n>", "cluster size: 3, 5 or 7 (default: each)")
  .option("--fault-time <units>", "simulated time of faults before healing", "3000")
  .option("--unsafe <rule>", "switch on a wrong rule: commit | vote")
  .option("--stop-on-failure", "stop at the first failing seed", false);
program.parse(["deno", "sim", ...Deno.args]);
const o = program.opts<{
  seed?: string;
  seeds: string;
  start: string;
  nodes?: string;
  faultTime: string;
  unsafe?: string;
  stopOnFailure: boolean;
}>();

function int(v: string, what: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) {
    console.error(`${what} must be a non-negative integer, got ${v}`);
    Deno.exit(2);
  }
  return n;
}

const sizes = o.nodes ? [int(o.nodes, "--nodes")] : [3, 5, 7];
for (const s of sizes) {
  if (![3, 5, 7].includes(s)) {
    console.error(`--nodes must be 3, 5 or 7, got ${s}`);
    Deno.exit(2);
  }
}
let unsafe: UnsafeOptions | undefined;
if (o.unsafe === "commit") unsafe = { commitPreviousTerm: true };
else if (o.unsafe === "vote") unsafe = { voteWithoutLogCheck: true };
else if (o.unsafe !== undefined) {
  console.error(`--unsafe must be commit or vote, got ${o.unsafe}`);
  Deno.exit(2);
}
const faultTime = int(o.faultTime, "--fault-time");

function show(r: SimReport): void {
  console.log(`seed ${r.seed} nodes ${r.nodes}: ${r.ok ? "ok" : "FAILED"}`);
  console.log(`  profile: ${r.profile}`);
  console.log(`  stats: ${JSON.stringify(r.stats)}`);
  for (const v of r.violations) console.log(`  violation: ${v}`);
}

if (o.seed !== undefined) {
  const seed = int(o.seed, "--seed");
  let failed = false;
  for (const nodes of sizes) {
    const r = simulate({ seed, nodes, faultTime, unsafe });
    show(r);
    failed ||= !r.ok;
  }
  Deno.exit(failed ? 1 : 0);
}

const count = int(o.seeds, "--seeds");
const start = int(o.start, "--start");
const failures: string[] = [];
const totals = {
  runs: 0,
  ops: 0,
  leaders: 0,
  crashes: 0,
  partitions: 0,
  snapshots: 0,
  confChanges: 0,
  unknownLin: 0,
  maxHeal: 0,
};
const t0 = performance.now();
for (let i = 0; i < count; i++) {
  const seed = start + i;
  for (const nodes of sizes) {
    const r = simulate({ seed, nodes, faultTime, unsafe });
    totals.runs++;
    totals.ops += r.stats.ops + r.stats.reads;
    totals.leaders += r.stats.leaders;
    totals.crashes += r.stats.crashes;
    totals.partitions += r.stats.partitions;
    totals.snapshots += r.stats.snapshotsInstalled;
    totals.confChanges += r.stats.confChanges;
    if (r.stats.linearizability === "unknown") totals.unknownLin++;
    totals.maxHeal = Math.max(totals.maxHeal, r.stats.healTicks);
    if (!r.ok) {
      failures.push(`--seed ${seed} --nodes ${nodes}`);
      show(r);
      if (o.stopOnFailure) break;
    }
  }
  if (o.stopOnFailure && failures.length) break;
  if ((i + 1) % 1000 === 0) {
    console.log(
      `${i + 1}/${count} seeds, ${failures.length} failing, ${
        ((performance.now() - t0) / 1000).toFixed(0)
      } s`,
    );
  }
}
console.log(
  `runs ${totals.runs} (seeds ${start}..${start + count - 1}, nodes ${sizes.join(",")}) in ${
    ((performance.now() - t0) / 1000).toFixed(1)
  } s`,
);
console.log(`totals: ${JSON.stringify(totals)}`);
console.log(failures.length ? `FAILING: ${failures.join("; ")}` : "no violations");
Deno.exit(failures.length ? 1 : 0);
