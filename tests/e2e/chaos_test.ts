/**
 * Chaos, end to end: three real nodes on 127.0.0.1, and one seed deciding a run of rounds. In
 * each round files are written, appended, truncated, renamed and deleted, and directories made,
 * renamed and removed, on every node (into the folder of a node that is down, too), while a
 * fault is in force: a node killed with SIGKILL (restarted at the end of the round), a node cut
 * off from the majority (the other two stopped) while only it is edited, or a node stopped.
 *
 * Each node owns a namespace (`own<i>/`) that only it edits, and all of them edit `shared/`.
 * After healing, the checks are:
 * - the three directories are byte-identical;
 * - every file holds content the run wrote (nothing torn, nothing mixed);
 * - each namespace holds exactly what its owner's edits left, file for file and directory for
 *   directory: no edit lost, none undone by a stale one, no spurious conflict copy;
 * - every shared file written is there, and it and every conflict copy of it hold content
 *   written to a shared file.
 *
 * `CHAOS_SEEDS=5,6,7` picks the seeds (default 1, 2 and 7: 7 brought a deleted file back before
 * pending proposals were kept) and `CHAOS_ROUNDS` the rounds per seed
 * (default 8); a failure names its seed, which replays the same choices (timing still varies),
 * and leaves each node's whole log behind (in `CHAOS_LOG_DIR`, where every run's logs go if it
 * is set).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Rng } from "../sim/rng.ts";
import { seededBytes } from "../helpers/bytes.ts";
import { runCli } from "../helpers/cli.ts";
import { NodeProcess, treeDigest, waitConverged, withCluster } from "../helpers/cluster.ts";

const TEST = { sanitizeResources: false, sanitizeOps: false };

const SEEDS = (Deno.env.get("CHAOS_SEEDS") ?? "1,2,7").split(",").map(Number);
const ROUNDS = Number(Deno.env.get("CHAOS_ROUNDS") ?? 8);
/** `CHAOS_DEBUG=1`: nodes log at debug level (Raft and sync pass details in the saved logs). */
const NODE_ARGS = Deno.env.get("CHAOS_DEBUG") ? ["--log-level", "debug"] : [];

/** How the tree digest names a file's content: the first 8 bytes of its SHA-256, in hex. */
function shortHash(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex").slice(0, 16);
}

/** What one node's namespace should hold: files (path -> content hash) and directories. */
class Namespace {
  readonly files = new Map<string, string>();
  readonly dirs = new Set<string>();
  constructor(readonly root: string) {
    this.dirs.add(root);
  }
}

/** The run's record of everything written, to check the end state against. */
interface Written {
  /** The hash of every content any file held after an op of this run. */
  any: Set<string>;
  /** Contents written to shared files, and the shared paths written. */
  shared: Set<string>;
  sharedPaths: Set<string>;
}

/** One random edit inside node `i`'s folder `dir`; returns a description for the log. */
async function edit(
  rng: Rng,
  dir: string,
  ns: Namespace,
  written: Written,
  tag: string,
): Promise<string> {
  const content = (n: number) => {
    const head = new TextEncoder().encode(`${tag}\n`);
    const out = new Uint8Array(head.length + n);
    out.set(head);
    out.set(seededBytes(rng.int(1, 2 ** 30), n), head.length);
    return out;
  };
  const size = () =>
    rng.chance(0.85)
      ? rng.int(1, 20_000)
      : rng.chance(0.7)
      ? rng.int(100_000, 1_000_000)
      : rng.int(2_000_000, 6_000_000);
  const record = async (path: string) => {
    const h = shortHash(await Deno.readFile(`${dir}/${path}`));
    ns.files.set(path, h);
    written.any.add(h);
  };
  const files = [...ns.files.keys()];
  const subdirs = [...ns.dirs].filter((d) => d !== ns.root);
  const kind = rng.int(0, 99);

  if (kind < 12) {
    // Shared files are small (one write call), so no scan can catch one half-written.
    const path = `shared/s${rng.int(0, 5)}.txt`;
    const bytes = content(rng.int(1, 2_000));
    await Deno.mkdir(`${dir}/shared`, { recursive: true });
    await Deno.writeFile(`${dir}/${path}`, bytes);
    const h = shortHash(bytes);
    written.shared.add(h);
    written.any.add(h);
    written.sharedPaths.add(path);
    return `write ${path}`;
  }
  if (kind < 20 && subdirs.length < 4) {
    const path = `${ns.root}/d${rng.int(0, 999)}`;
    if (ns.dirs.has(path)) return "mkdir (exists)";
    await Deno.mkdir(`${dir}/${path}`);
    ns.dirs.add(path);
    return `mkdir ${path}`;
  }
  if (kind < 24 && subdirs.length > 0) {
    const from = rng.pick(subdirs);
    const to = `${ns.root}/d${rng.int(0, 999)}`;
    if (ns.dirs.has(to)) return "rename dir (target exists)";
    await Deno.rename(`${dir}/${from}`, `${dir}/${to}`);
    ns.dirs.delete(from);
    ns.dirs.add(to);
    for (const [p, h] of [...ns.files]) {
      if (p.startsWith(`${from}/`)) {
        ns.files.delete(p);
        ns.files.set(`${to}/${p.slice(from.length + 1)}`, h);
      }
    }
    return `rename ${from} -> ${to}`;
  }
  if (kind < 27 && subdirs.length > 0) {
    const gone = rng.pick(subdirs);
    await Deno.remove(`${dir}/${gone}`, { recursive: true });
    ns.dirs.delete(gone);
    for (const p of [...ns.files.keys()]) if (p.startsWith(`${gone}/`)) ns.files.delete(p);
    return `rmdir ${gone}`;
  }
  if (kind < 40 && files.length > 0) {
    const path = rng.pick(files);
    const f = await Deno.open(`${dir}/${path}`, { append: true });
    try {
      const more = content(rng.int(1, 50_000));
      let n = 0;
      while (n < more.length) n += await f.write(more.subarray(n));
    } finally {
      f.close();
    }
    await record(path);
    return `append ${path}`;
  }
  if (kind < 48 && files.length > 0) {
    const path = rng.pick(files);
    const size = (await Deno.stat(`${dir}/${path}`)).size;
    await Deno.truncate(`${dir}/${path}`, rng.int(0, size));
    await record(path);
    return `truncate ${path}`;
  }
  if (kind < 56 && files.length > 0) {
    const path = rng.pick(files);
    await Deno.remove(`${dir}/${path}`);
    ns.files.delete(path);
    return `delete ${path}`;
  }
  if (kind < 66 && files.length > 0) {
    const from = rng.pick(files);
    const to = `${rng.pick([...ns.dirs])}/f${rng.int(0, 999)}.bin`;
    if (ns.files.has(to)) return "rename (target exists)";
    await Deno.rename(`${dir}/${from}`, `${dir}/${to}`);
    ns.files.set(to, ns.files.get(from)!);
    ns.files.delete(from);
    return `rename ${from} -> ${to}`;
  }
  // Create or overwrite in place, as an editor or a build would.
  const path = files.length > 0 && rng.chance(0.4)
    ? rng.pick(files)
    : `${rng.pick([...ns.dirs])}/f${rng.int(0, 999)}.bin`;
  await Deno.writeFile(`${dir}/${path}`, content(size()));
  await record(path);
  return `write ${path}`;
}

/** A sleep of up to `ms`, drawn from the run's generator. */
function pause(rng: Rng, ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, rng.int(0, ms)));
}

/** Write each node's whole log (every process it ran) into `dir` (a new temp dir if none). */
async function saveLogs(seed: number, runs: NodeProcess[][], dir?: string): Promise<string> {
  const logDir = dir ?? await Deno.makeTempDir({ prefix: "chaos-logs-" });
  for (let i = 0; i < runs.length; i++) {
    const text = runs[i].map((n, k) => `=== run ${k}\n${n.stderr}`).join("\n");
    await Deno.writeTextFile(`${logDir}/seed${seed}-node${i}.log`, text);
  }
  return logDir;
}

async function runChaos(seed: number): Promise<void> {
  const rng = new Rng(seed);
  const log: string[] = [];
  await withCluster(async (dirs, nodes) => {
    const spaces = dirs.map((_, i) => new Namespace(`own${i}`));
    const written: Written = { any: new Set(), shared: new Set(), sharedPaths: new Set() };
    for (let i = 0; i < dirs.length; i++) await Deno.mkdir(`${dirs[i]}/own${i}`);
    // Every process each node ran, so a failure can leave their whole logs behind.
    const runs = nodes.map((n) => [n]);
    let op = 0;
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const target = rng.int(0, 2);
        const others = [0, 1, 2].filter((i) => i !== target);
        const fault = rng.pick(["none", "kill", "cut off", "stop"] as const);
        log.push(`round ${round}: ${fault} node ${target}`);
        if (fault === "kill") {
          nodes[target].kill("SIGKILL");
          await nodes[target].stop();
        } else if (fault === "cut off") {
          for (const i of others) nodes[i].kill("SIGSTOP");
        } else if (fault === "stop") nodes[target].kill("SIGSTOP");
        try {
          const editors = fault === "cut off" ? [target] : [0, 1, 2];
          const count = rng.int(4, 12);
          for (let k = 0; k < count; k++) {
            const i = rng.pick(editors);
            const tag = `seed ${seed} op ${op++} node ${i}`;
            log.push(`  ${tag}: ${await edit(rng, dirs[i], spaces[i], written, tag)}`);
            await pause(rng, 300);
          }
          // Cut off, the node's edits wait without a majority for a while.
          if (fault === "cut off") await pause(rng, 3_000);
        } finally {
          if (fault === "cut off") { for (const i of others) nodes[i].kill("SIGCONT"); }
          else if (fault === "stop") nodes[target].kill("SIGCONT");
          else if (fault === "kill") {
            nodes[target] = await NodeProcess.start(dirs[target], NODE_ARGS);
            runs[target].push(nodes[target]);
          }
        }
        await pause(rng, 1_500);
      }

      const listing = await waitConverged(dirs, 180_000);
      for (const d of dirs) {
        const r = await runCli(["status", d, "--wait", "--timeout", "60"]);
        assert.equal(r.code, 0, `status --wait ${d}: ${r.stderr}`);
      }
      // The digest may have been taken while a last write was still being renamed in: again.
      const final = (await treeDigest(dirs[0])).listing;
      assert.deepEqual(final, listing, "the tree changed after it had converged");

      const files = new Map<string, string>();
      const dirsSeen = new Set<string>();
      for (const line of final) {
        if (line.endsWith("/")) dirsSeen.add(line.slice(0, -1));
        else {
          const cut = line.lastIndexOf(" ");
          files.set(line.slice(0, cut), line.slice(cut + 1));
        }
      }
      for (const [path, h] of files) {
        assert.ok(written.any.has(h), `${path} holds content no op wrote (torn or mixed)`);
      }
      for (const ns of spaces) {
        const mine = (p: string) => p === ns.root || p.startsWith(`${ns.root}/`);
        const got = new Map([...files].filter(([p]) => mine(p)));
        assert.deepEqual(
          new Map([...got].sort()),
          new Map([...ns.files].sort()),
          `${ns.root}: the files differ from what its owner's edits left`,
        );
        assert.deepEqual(
          [...dirsSeen].filter(mine).sort(),
          [...ns.dirs].sort(),
          `${ns.root}: the directories differ from what its owner's edits left`,
        );
      }
      for (const path of written.sharedPaths) {
        assert.ok(files.has(path), `${path} was written but is gone`);
      }
      for (const [path, h] of files) {
        if (path.startsWith("shared/")) {
          assert.ok(written.shared.has(h), `${path} holds content never written to a shared file`);
        }
      }
    } catch (e) {
      const logDir = await saveLogs(seed, runs, Deno.env.get("CHAOS_LOG_DIR"));
      console.error(`chaos seed ${seed} (node logs in ${logDir}), what it did:\n${log.join("\n")}`);
      throw e;
    }
    const keep = Deno.env.get("CHAOS_LOG_DIR");
    if (keep) await saveLogs(seed, runs, keep);
  }, { prefix: `filesync-chaos-${seed}-`, extra: NODE_ARGS });
}

for (const seed of SEEDS) {
  Deno.test({
    ...TEST,
    name: `chaos: seed ${seed}: edits on every node through kills, cut-offs and stops lose nothing`,
    fn: () => runChaos(seed),
  });
}
