/**
 * Three nodes where the first one's uplink is the bottleneck, as on a real network (a laptop
 * sharing a folder with two machines): does a new file reach the others faster when they
 * fetch from each other too, and how much of it does the origin still send?
 *
 * The whole run happens in a network namespace of its own (`ip netns`, root needed), whose
 * loopback carries a traffic-control rule: packets from node A's QUIC port go through an HTB
 * class limited to `--mbit` (default 200 Mbit/s); everything else is unlimited. Nothing
 * outside the namespace is touched, and it is deleted at the end.
 *
 * For each fetch policy, a fresh cluster: A starts with the anchor's workload (--large-mib,
 * default 128) and scans it; then B and C join at once; the clock runs until both trees are
 * byte-identical to A's. Printed: that time, and the object bytes each node served.
 *   - "origin first": FILESYNC_FETCH_FROM=origin, every node fetches from the file's origin
 *     and asks others only for what the origin lacks (the policy before peers fetched from
 *     each other);
 *   - "all members": the default.
 *
 * Usage: deno task bench:uplink [--mbit 200] [--large-mib 128] [--logs DIR] [--skip-origin]
 */
import { NodeProcess, tempDirs, waitFor } from "../tests/helpers/cluster.ts";
import { runCli } from "../tests/helpers/cli.ts";
import { arg, contentHash, generateWorkload, sh, shape } from "./workload.ts";

// Timings of nodes as users run them: no test-only consistency checks.
NodeProcess.checkViews = false;

const MBIT = Number(arg("mbit", "200"));
const LARGE_MIB = Number(arg("large-mib", "128"));
const INSIDE = "--inside-namespace";
/** With --logs DIR, each node logs at debug level into DIR/<policy>-<node>.log. */
const LOGS = arg("logs", "");
const LOG_ARGS = LOGS ? ["--log-level", "debug", "--log-format", "json"] : [];

interface Outcome {
  seconds: number;
  /** Object bytes served by A, B and C. */
  served: number[];
}

/** Limit what leaves A's UDP port on this namespace's loopback to MBIT. */
async function limitUplink(port: number): Promise<void> {
  await sh(["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "20"]);
  const cls = (id: string, rate: string) =>
    sh(["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", id, "htb", "rate", rate]);
  await cls("1:10", `${MBIT}mbit`);
  await cls("1:20", "100gbit");
  await sh([
    ...["tc", "filter", "add", "dev", "lo", "protocol", "ip", "parent", "1:0", "prio", "1"],
    ...["u32", "match", "ip", "sport", String(port), "0xffff", "flowid", "1:10"],
  ]);
}

async function clearLimit(): Promise<void> {
  await sh(["tc", "qdisc", "del", "dev", "lo", "root"]).catch(() => {});
}

/** One cluster: A with the workload, B and C joining at once; until both match A. */
async function run(src: string, policy: "origin" | "all"): Promise<Outcome> {
  if (policy === "origin") Deno.env.set("FILESYNC_FETCH_FROM", "origin");
  else Deno.env.delete("FILESYNC_FETCH_FROM");
  const dirs = await tempDirs(3, `filesync-uplink-${policy}-`);
  await sh(["cp", "-a", `${src}/.`, dirs[0]]);
  const want = await shape(src);
  const wantHash = await contentHash(src);
  const nodes: NodeProcess[] = [];
  try {
    const a = await NodeProcess.start(dirs[0], LOG_ARGS);
    nodes.push(a);
    await waitFor("A's first scan", async () => (await a.status()).sync.passes > 0, 120_000);
    const port = Number(/\/udp\/(\d+)\/quic/.exec(a.stdout + a.stderr)?.[1]);
    if (!port) throw new Error("A's QUIC port not found in its output");
    await limitUplink(port);
    const invites = [await runCli(["invite", dirs[0]]), await runCli(["invite", dirs[0]])];
    const t0 = performance.now();
    nodes.push(
      ...await Promise.all(
        [1, 2].map((i) =>
          NodeProcess.start(dirs[i], ["--join", invites[i - 1].stdout.trim(), ...LOG_ARGS])
        ),
      ),
    );
    for (const d of dirs.slice(1)) {
      await waitFor("sync", async () => (await shape(d).catch(() => "")) === want, 1_800_000, 100);
    }
    const seconds = (performance.now() - t0) / 1000;
    for (const d of dirs.slice(1)) {
      if (await contentHash(d) !== wantHash) throw new Error(`${d} differs from A`);
    }
    const served = await Promise.all(nodes.map(async (n) => (await n.status()).sync.servedBytes));
    return { seconds, served };
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    if (LOGS) {
      for (const [i, n] of nodes.entries()) {
        await Deno.writeTextFile(`${LOGS}/${policy}-${"ABC"[i]}.log`, n.stderr);
      }
    }
    await clearLimit();
    for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
}

async function inside(): Promise<void> {
  await sh(["ip", "link", "set", "lo", "up"]);
  const work = await Deno.makeTempDir({ prefix: "filesync-uplink-" });
  try {
    const src = `${work}/src`;
    await generateWorkload(src, LARGE_MIB);
    const origin = Deno.args.includes("--skip-origin")
      ? { seconds: NaN, served: [0, 0, 0] }
      : await run(src, "origin");
    const all = await run(src, "all");
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
    const row = (name: string, o: Outcome) =>
      `${name.padEnd(16)}${o.seconds.toFixed(2).padStart(8)} s    A ${
        mib(o.served[0]).padStart(8)
      }   B ${mib(o.served[1]).padStart(8)}   C ${mib(o.served[2]).padStart(8)}`;
    console.log(
      `\n3 nodes, A's uplink limited to ${MBIT} Mbit/s, anchor workload with a ${LARGE_MIB} MiB file`,
    );
    console.log("policy          until B and C match   object bytes served");
    console.log(row("origin first", origin));
    console.log(row("all members", all));
    console.log(JSON.stringify({ mbit: MBIT, largeMiB: LARGE_MIB, origin, all }));
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

async function outside(): Promise<void> {
  if (Deno.uid() !== 0) {
    console.error("bench:uplink needs root (it creates a network namespace and a tc rule)");
    Deno.exit(1);
  }
  const ns = `filesync-uplink-${Deno.pid}`;
  await sh(["ip", "netns", "add", ns]);
  try {
    const child = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        ns,
        Deno.execPath(),
        "run",
        "-A",
        import.meta.filename!,
        ...Deno.args,
        INSIDE,
      ],
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const status = await child.status;
    if (!status.success) throw new Error(`the bench inside ${ns} exited ${status.code}`);
  } finally {
    await sh(["ip", "netns", "del", ns]);
  }
}

if (Deno.args.includes(INSIDE)) await inside();
else await outside();
