/**
 * Real `filesync serve` processes on 127.0.0.1 for end-to-end tests: start, read what they
 * print, ask their status, and stop them by PID (only the processes a test started).
 */
import { runCli } from "./cli.ts";
import type { NodeStatus } from "../../src/daemon.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1";

/** A running node process. */
export class NodeProcess {
  /**
   * Nodes check every pass's kept views against a whole read of their store and log an error
   * on a difference, which stop() turns into a failure (see src/sync/plan_views.ts). Benches
   * turn it off: the check costs what the kept views save.
   */
  static checkViews = true;
  #child: Deno.ChildProcess;
  #stdout = "";
  #stderr = "";
  #done: Promise<Deno.CommandStatus>;

  private constructor(readonly dir: string, args: string[]) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--unstable-kv", "-A", MAIN, "serve", dir, "--listen", LISTEN, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", FILESYNC_CHECK_VIEWS: NodeProcess.checkViews ? "1" : "0" },
    }).spawn();
    this.#done = this.#child.status;
    this.#pump(this.#child.stdout, (t) => this.#stdout += t);
    this.#pump(this.#child.stderr, (t) => this.#stderr += t);
  }

  async #pump(stream: ReadableStream<Uint8Array>, add: (t: string) => void) {
    const dec = new TextDecoder();
    for await (const piece of stream) add(dec.decode(piece, { stream: true }));
  }

  /** Start `filesync serve dir [...args]` and wait until it serves (or fails). */
  static async start(dir: string, args: string[] = [], timeoutMs = 30_000): Promise<NodeProcess> {
    const node = new NodeProcess(dir, args);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (/^node \S+ of cluster/m.test(node.#stdout)) return node;
      const exited = await Promise.race([node.#done, new Promise((r) => setTimeout(r, 50))]);
      if (exited) {
        await new Promise((r) => setTimeout(r, 50)); // let the pipes drain
        throw new Error(`serve exited early: ${node.#stderr.trim()}`);
      }
    }
    node.kill("SIGKILL");
    throw new Error(`serve did not start within ${timeoutMs} ms: ${node.#stderr}`);
  }

  get pid(): number {
    return this.#child.pid;
  }
  get stdout(): string {
    return this.#stdout;
  }
  get stderr(): string {
    return this.#stderr;
  }

  /** The invite a first node prints. */
  get invite(): string {
    const m = /^invite (\S+)$/m.exec(this.#stdout);
    if (!m) throw new Error("this node printed no invite");
    return m[1];
  }

  /** `filesync status --json` of this node. */
  async status(): Promise<Status> {
    const r = await runCli(["status", this.dir, "--json"]);
    if (r.code !== 0) throw new Error(`status failed: ${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  /** Send a signal to this process (only ever one a test started). */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.#child.kill(signal);
    } catch { /* already gone */ }
  }

  /**
   * Stop and wait for exit; SIGKILL after a grace period. Throws, once the process is gone, if
   * it logged that its kept plan views had missed a change.
   */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    this.kill(signal);
    const t = setTimeout(() => this.kill("SIGKILL"), 10_000);
    let status: Deno.CommandStatus;
    try {
      status = await this.#done;
    } finally {
      clearTimeout(t);
    }
    await new Promise((r) => setTimeout(r, 20)); // let the pipes drain
    const missed = this.#stderr.split("\n").find((l) => l.includes("plan views out of step"));
    if (missed) throw new Error(`${this.dir}: ${missed}`);
    return status;
  }
}

/** The shape of `filesync status --json` that tests read. */
/** What `filesync status --json` prints. */
export type Status = NodeStatus;

/** Poll `fn` until it returns a truthy value or the time is up (then throw with `what`). */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false>,
  // Generous: these are liveness bounds on a shared 2-core machine running other tests too,
  // not performance assertions.
  timeoutMs = 45_000,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

/** Make `n` fresh temporary directories. */
export async function tempDirs(n: number, prefix = "filesync-e2e-"): Promise<string[]> {
  return await Promise.all(Array.from({ length: n }, () => Deno.makeTempDir({ prefix })));
}

/**
 * A content hash of a whole tree (paths, kinds, file bytes, symlink targets; `.filesync/`
 * excluded), so three directories can be compared in one assertion. Also returns the listing,
 * which makes a failed comparison readable.
 */
export async function treeDigest(root: string): Promise<{ digest: string; listing: string[] }> {
  const listing: string[] = [];
  const walk = async (rel: string) => {
    const names: string[] = [];
    for await (const e of Deno.readDir(rel ? `${root}/${rel}` : root)) names.push(e.name);
    names.sort();
    for (const name of names) {
      if (!rel && name === ".filesync") continue;
      if (name.startsWith(".filesync-tmp-")) continue; // a write in progress, not yet visible
      const path = rel ? `${rel}/${name}` : name;
      const info = await Deno.lstat(`${root}/${path}`);
      if (info.isSymlink) listing.push(`${path} -> ${await Deno.readLink(`${root}/${path}`)}`);
      else if (info.isDirectory) {
        listing.push(`${path}/`);
        await walk(path);
      } else {
        const bytes = await Deno.readFile(`${root}/${path}`);
        const h = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
        listing.push(
          `${path} ${Array.from(h.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("")}`,
        );
      }
    }
  };
  await walk("");
  const all = new TextEncoder().encode(listing.join("\n"));
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return { digest: Array.from(d, (b) => b.toString(16).padStart(2, "0")).join(""), listing };
}

/** Wait until every directory has the same tree digest; returns it. */
export async function waitConverged(dirs: string[], timeoutMs = 60_000): Promise<string[]> {
  let last: string[][] = [];
  try {
    return await waitFor(
      "directories to converge",
      async () => {
        const ds = await Promise.all(dirs.map(treeDigest));
        last = ds.map((d) => d.listing);
        return ds.every((d) => d.digest === ds[0].digest) ? ds[0].listing : null;
      },
      timeoutMs,
      250,
    );
  } catch (e) {
    throw new Error(
      `${(e as Error).message}\n${
        last.map((l, i) => `${dirs[i]}:\n  ${l.join("\n  ")}`).join("\n")
      }`,
    );
  }
}

/** Start a three-node cluster: the second joins through the first, the third through the second. */
export async function startCluster(dirs: string[], extra: string[] = []): Promise<NodeProcess[]> {
  const a = await NodeProcess.start(dirs[0], extra);
  const b = await NodeProcess.start(dirs[1], ["--join", a.invite, ...extra]);
  const inv = await runCli(["invite", dirs[1], "--ttl", "10m"]);
  if (inv.code !== 0) throw new Error(`invite failed: ${inv.stderr}`);
  const c = await NodeProcess.start(dirs[2], ["--join", inv.stdout.trim(), ...extra]);
  const nodes = [a, b, c];
  try {
    await waitFor("three voters with a leader everywhere", async () => {
      for (const n of nodes) {
        const s = await n.status();
        if (s.members.filter((m) => m.role === "voter").length !== nodes.length || !s.leader) {
          return false;
        }
      }
      return true;
    }, 60_000);
  } catch (e) {
    // Leave a trail: each node's view and the end of its log.
    const views = await Promise.all(nodes.map(async (n) => {
      const st = await n.status().catch((err) => String(err));
      return `${n.dir}: ${JSON.stringify(st)}\n${n.stderr.split("\n").slice(-15).join("\n")}`;
    }));
    await Promise.all(nodes.map((n) => n.stop()));
    throw new Error(`${(e as Error).message}\n${views.join("\n")}`);
  }
  return nodes;
}

/** User + system CPU time of a process so far, in clock ticks (100 per second here). */
export async function cpuTicks(pid: number): Promise<number> {
  // Read through `cat`: Deno lets only --allow-all read /proc directly, the suite runs with
  // --allow-run.
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/stat`] }).output();
  const stat = new TextDecoder().decode(out.stdout);
  // Fields after the parenthesized command name; utime and stime are the 14th and 15th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/**
 * Run `fn` against a fresh three-node cluster (`extra`: more serve arguments for every node).
 * If it fails, the ends of the nodes' logs are printed (the best clue); either way the nodes
 * are resumed (a test may have stopped one), stopped, and their directories removed. `fn` may
 * replace entries of `nodes` (a restarted node): those are the ones stopped.
 */
export async function withCluster(
  fn: (dirs: string[], nodes: NodeProcess[]) => Promise<void>,
  opts: { prefix?: string; extra?: string[] } = {},
): Promise<void> {
  const dirs = await tempDirs(3, opts.prefix ?? "filesync-cluster-");
  let nodes: NodeProcess[] = [];
  const stopAll = async () => {
    for (const n of nodes) n.kill("SIGCONT");
    const stops = await Promise.allSettled(nodes.map((n) => n.stop()));
    for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
    return stops.find((s): s is PromiseRejectedResult => s.status === "rejected");
  };
  try {
    nodes = await startCluster(dirs, opts.extra);
    await fn(dirs, nodes);
  } catch (e) {
    for (const n of nodes) {
      console.error(`--- log of ${n.dir}:\n${n.stderr.split("\n").slice(-40).join("\n")}`);
    }
    await stopAll(); // the test's own error says more than a node's complaint
    throw e;
  }
  // A node's own complaint (see stop()) fails the test once everything is cleaned up.
  const complaint = await stopAll();
  if (complaint) throw complaint.reason;
}
