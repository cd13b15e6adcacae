/**
 * Invite to first replicated entry: a fresh node runs `filesync serve --join <invite>` against
 * a running one-node cluster on 127.0.0.1; we time (a) process start to "joined" (handshake
 * done, admitted as a learner) and (b) process start to the joiner having applied everything
 * the cluster had committed. Process start-up of Deno is included and reported separately as
 * the time to a bare `filesync --version`.
 *
 * Usage: deno task bench:join [--trials 5]
 */
import { NodeProcess, tempDirs, waitFor } from "../tests/helpers/cluster.ts";
import { runCli } from "../tests/helpers/cli.ts";

// Timings of nodes as users run them: no test-only consistency checks.
NodeProcess.checkViews = false;

const trialsArg = Deno.args.indexOf("--trials");
const TRIALS = trialsArg >= 0 ? Number(Deno.args[trialsArg + 1]) : 5;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const startup: number[] = [];
for (let i = 0; i < 3; i++) {
  const t = performance.now();
  await runCli(["--version"]);
  startup.push(performance.now() - t);
}

const [dirA] = await tempDirs(1, "filesync-join-bench-");
const a = await NodeProcess.start(dirA);
const joined: number[] = [];
const replicated: number[] = [];
try {
  for (let i = 0; i < TRIALS; i++) {
    const [dir] = await tempDirs(1, "filesync-join-bench-");
    const target = (await a.status()).commit;
    const t0 = performance.now();
    const b = await NodeProcess.start(dir, ["--join", a.invite]);
    await waitFor("joined", () => Promise.resolve(b.stderr.includes(" joined ")), 30_000, 5);
    joined.push(performance.now() - t0);
    await waitFor("replicated", async () => (await b.status()).applied >= target, 30_000, 20);
    replicated.push(performance.now() - t0);
    // Leave the cluster a single voter again for the next trial (while both can vote).
    const bPeer = (await b.status()).peerId;
    const removed = await runCli(["remove", dirA, bPeer]);
    if (removed.code !== 0) throw new Error(`remove failed: ${removed.stderr}`);
    await b.stop();
    await Deno.remove(dir, { recursive: true });
  }
} finally {
  await a.stop();
  await Deno.remove(dirA, { recursive: true });
}

console.log("case                                   median     all (ms)");
console.log(
  `deno start-up (filesync --version)     ${median(startup).toFixed(0).padStart(6)} ms  ${
    startup.map((x) => x.toFixed(0)).join(" ")
  }`,
);
console.log(
  `start -> joined (admitted as learner)  ${median(joined).toFixed(0).padStart(6)} ms  ${
    joined.map((x) => x.toFixed(0)).join(" ")
  }`,
);
console.log(
  `start -> first replicated entries      ${median(replicated).toFixed(0).padStart(6)} ms  ${
    replicated.map((x) => x.toFixed(0)).join(" ")
  }`,
);
console.log(
  JSON.stringify({
    startupMs: median(startup),
    joinedMs: median(joined),
    replicatedMs: median(replicated),
  }),
);
