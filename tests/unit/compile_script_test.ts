/**
 * The build scripts, through their --dry-run (no build, no download): scripts/compile.sh hands
 * deno compile everything the binary needs at run time (unstable KV, the permissions of the
 * `filesync` task, every Worker module, the QUIC addon of the target platform), and
 * scripts/release.sh builds every target that `deno compile --target` accepts.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;

/** The npm platform package of @chainsafe/libp2p-quic for each deno target. */
const QUIC_ADDON: Record<string, string | null> = {
  "x86_64-unknown-linux-gnu": "linux-x64-gnu",
  "aarch64-unknown-linux-gnu": "linux-arm64-gnu",
  "x86_64-apple-darwin": "darwin-x64",
  "aarch64-apple-darwin": "darwin-arm64",
  "x86_64-pc-windows-msvc": "win32-x64-msvc",
  "aarch64-pc-windows-msvc": null,
};

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a script of scripts/ with bash, without the caller's DENORT_* settings unless given. */
async function run(script: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base = Deno.env.toObject();
  delete base.DENORT_BIN;
  delete base.DENORT_DIR;
  const out = await new Deno.Command("bash", {
    args: [`scripts/${script}`, ...args],
    cwd: ROOT,
    env: { ...base, NO_COLOR: "1", ...env },
    clearEnv: true,
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** The words of printed shell commands (backslash-escaped, as bash's printf %q writes them). */
function words(text: string): string[] {
  const joined = text.replace(/\\\n/g, " ");
  return (joined.match(/(?:\\.|[^\s\\])+/g) ?? []).map((w) => w.replace(/\\(.)/g, "$1"));
}

/** The deno command lines of a dry run: one word list per command (each starts with a deno). */
function commands(stdout: string): string[][] {
  const cmds: string[][] = [];
  for (const line of stdout.replace(/\\\n/g, " ").split("\n")) {
    const w = words(line);
    if (w.length > 1 && w[1] === "compile") cmds.push(w);
  }
  return cmds;
}

/** Every value given to `flag` in a command. */
function values(cmd: string[], flag: string): string[] {
  const out: string[] = [];
  cmd.forEach((w, i) => {
    if (w === flag && i + 1 < cmd.length) out.push(cmd[i + 1]);
  });
  return out;
}

/** The permission flags of the `filesync` task in deno.json: what the program runs with. */
async function taskPermissions(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const flags = String(config.tasks.filesync).match(/--allow-[a-z]+/g) ?? [];
  assert.ok(flags.length >= 5, "the filesync task names its permissions");
  return flags;
}

/** Worker modules under src/ (`new Worker(new URL("./x.ts", import.meta.url)...`), repo-relative. */
async function workerModules(): Promise<string[]> {
  const found: string[] = [];
  const pattern = /new\s+Worker\(\s*new\s+URL\(\s*["'`]([^"'`]+)["'`]\s*,\s*import\.meta\.url/g;
  async function walk(dir: string): Promise<void> {
    for await (const e of Deno.readDir(`${ROOT}${dir}`)) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(path);
      else if (/\.[jt]s$/.test(e.name)) {
        for (const m of (await Deno.readTextFile(`${ROOT}${path}`)).matchAll(pattern)) {
          found.push(new URL(m[1], `file:///${path}`).pathname.slice(1));
        }
      }
    }
  }
  await walk("src");
  return found;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function lockVersion(pkg: string): Promise<string> {
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}package-lock.json`));
  return lock.packages["node_modules/@chainsafe/libp2p-quic"].optionalDependencies[pkg];
}

/** Assert what every compile command needs, whatever the target. */
async function assertRuntimeNeeds(cmd: string[]): Promise<void> {
  assert.match(cmd[0], /deno$/);
  assert.equal(cmd[1], "compile");
  assert.equal(cmd.at(-1), "main.ts", "the entry point comes last");
  assert.ok(cmd.includes("--unstable-kv"), "Deno.openKv needs --unstable-kv");
  for (const flag of await taskPermissions()) assert.ok(cmd.includes(flag), `missing ${flag}`);
  const includes = values(cmd, "--include");
  const workers = await workerModules();
  assert.ok(workers.includes("src/sync/scan_worker.ts"), "the scan worker is found in src/");
  for (const w of workers) assert.ok(includes.includes(w), `worker ${w} not --include'd`);
  assert.ok(!values(cmd, "--exclude").some((e) => e.startsWith("src") || e === "main.ts"));
}

Deno.test("compile.sh --dry-run: the host binary gets every flag it needs", async () => {
  const r = await run("compile.sh", ["--dry-run"]);
  assert.equal(r.code, 0, r.stderr);
  const cmds = commands(r.stdout);
  assert.equal(cmds.length, 1, r.stdout);
  const cmd = cmds[0];
  await assertRuntimeNeeds(cmd);
  assert.deepEqual(values(cmd, "--output"), ["dist/filesync"]);
  assert.deepEqual(values(cmd, "--target"), [], "no --target for the host build");
  const addon = QUIC_ADDON[Deno.build.target];
  assert.ok(addon, `a QUIC addon for ${Deno.build.target}`);
  assert.ok(values(cmd, "--include").includes(`node_modules/@chainsafe/libp2p-quic-${addon}`));
  // The deno npm package (its ~90 MB binary) is not shipped inside the program.
  assert.ok(values(cmd, "--exclude").includes("node_modules/@deno"));
  assert.match(r.stderr, /runtime: denort \d+\.\d+\.\d+ for /);
});

Deno.test("compile.sh --dry-run --target: the target's QUIC addon, fetched at its locked version", async () => {
  const target = "aarch64-apple-darwin";
  const dir = `node_modules/@chainsafe/libp2p-quic-${QUIC_ADDON[target]}`;
  const existedBefore = await exists(`${ROOT}${dir}`);
  const r = await run("compile.sh", ["--dry-run", "--target", target]);
  assert.equal(r.code, 0, r.stderr);
  const [cmd] = commands(r.stdout);
  await assertRuntimeNeeds(cmd);
  assert.deepEqual(values(cmd, "--target"), [target]);
  assert.deepEqual(values(cmd, "--output"), [`dist/filesync-${target}`]);
  const quicIncludes = values(cmd, "--include").filter((p) => p.includes("libp2p-quic-"));
  assert.deepEqual(quicIncludes, [dir], "exactly the target's addon is included");
  for await (const e of Deno.readDir(`${ROOT}node_modules/@chainsafe`)) {
    const other = `node_modules/@chainsafe/${e.name}`;
    if (e.name.startsWith("libp2p-quic-") && other !== dir) {
      assert.ok(values(cmd, "--exclude").includes(other), `${other} (another platform) excluded`);
    }
  }
  if (!existedBefore) {
    const version = await lockVersion(`@chainsafe/libp2p-quic-${QUIC_ADDON[target]}`);
    assert.ok(version, "package-lock.json pins the target's addon");
    assert.ok(r.stderr.includes(`would fetch @chainsafe/libp2p-quic-darwin-arm64@${version}`));
    assert.equal(await exists(`${ROOT}${dir}`), false, "a dry run fetches nothing");
  }
});

Deno.test("compile.sh --dry-run: Windows output ends in .exe; --output is honoured", async () => {
  const win = await run("compile.sh", ["--dry-run", "--target", "x86_64-pc-windows-msvc"]);
  assert.equal(win.code, 0, win.stderr);
  const [cmd] = commands(win.stdout);
  assert.deepEqual(values(cmd, "--output"), ["dist/filesync-x86_64-pc-windows-msvc.exe"]);
  assert.ok(
    values(cmd, "--include").includes("node_modules/@chainsafe/libp2p-quic-win32-x64-msvc"),
  );

  const custom = await run("compile.sh", ["--dry-run", "--output", "dist/custom-name"]);
  assert.equal(custom.code, 0, custom.stderr);
  assert.deepEqual(values(commands(custom.stdout)[0], "--output"), ["dist/custom-name"]);
});

Deno.test("compile.sh: a target without a QUIC addon or an unknown one fails in one line", async () => {
  for (
    const [args, code] of [
      [["--dry-run", "--target", "aarch64-pc-windows-msvc"], 3],
      [["--dry-run", "--target", "sparc-sun-solaris"], 2],
      [["--dry-run", "--bogus"], 2],
    ] as const
  ) {
    const r = await run("compile.sh", [...args]);
    assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

Deno.test("compile.sh: DENORT_BIN is honoured and reported", async () => {
  const dir = await Deno.makeTempDir({ prefix: "filesync-denort-" });
  try {
    const denort = `${dir}/denort`;
    await Deno.writeTextFile(denort, "");
    const r = await run("compile.sh", ["--dry-run"], { DENORT_BIN: denort });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stderr.includes(`runtime: DENORT_BIN=${denort}`), r.stderr);

    const missing = await run("compile.sh", ["--dry-run"], { DENORT_BIN: `${dir}/absent` });
    assert.equal(missing.code, 3);
    assert.match(missing.stderr.trim(), /^compile\.sh: DENORT_BIN=.*absent: no such file$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The targets `deno compile --target` accepts, from deno's own error for a bad one. */
async function denoTargets(): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["compile", "--target", "not-a-target", "main.ts"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(out.stderr);
  const m = text.match(/possible values: ([^\n]+)/);
  assert.ok(m, text);
  return m[1].split(",").map((t) => t.trim()).filter(Boolean).sort();
}

Deno.test("release.sh --dry-run lists every target deno compile supports", async () => {
  const targets = await denoTargets();
  assert.ok(targets.length >= 5, `${targets}`);
  for (const t of targets) assert.ok(t in QUIC_ADDON, `this test knows target ${t}`);

  const r = await run("release.sh", ["--dry-run"]);
  assert.equal(r.code, 0, r.stderr);
  const cmds = commands(r.stdout);
  const built = cmds.map((c) => values(c, "--target")[0]).sort();
  const skipped = [...r.stderr.matchAll(/^release\.sh: skip (\S+): /gm)].map((m) => m[1]);
  assert.deepEqual([...built, ...skipped].sort(), targets, "every target built or skipped");
  // Only a target without a QUIC addon is skipped, and it says why.
  assert.deepEqual(skipped, targets.filter((t) => QUIC_ADDON[t] === null));
  for (const cmd of cmds) {
    const t = values(cmd, "--target")[0];
    await assertRuntimeNeeds(cmd);
    const exe = t.includes("windows") ? ".exe" : "";
    assert.deepEqual(values(cmd, "--output"), [`dist/filesync-${t}${exe}`]);
    const quic = values(cmd, "--include").filter((p) => p.includes("libp2p-quic-"));
    assert.deepEqual(quic, [`node_modules/@chainsafe/libp2p-quic-${QUIC_ADDON[t]}`]);
  }
  const sums = r.stdout.split("\n").find((l) => l.includes("SHA256SUMS"));
  assert.ok(sums, "the checksum step is printed");
  for (const t of built) assert.ok(sums.includes(`filesync-${t}`), `${t} in SHA256SUMS`);
});

Deno.test("release.sh: one DENORT_BIN for several targets is refused in one line", async () => {
  const r = await run("release.sh", ["--dry-run"], { DENORT_BIN: "/nonexistent/denort" });
  assert.notEqual(r.code, 0);
  assert.equal(r.stdout, "");
  assert.match(r.stderr.trim(), /^release\.sh: DENORT_BIN names one runtime .*DENORT_DIR/);
  const unknown = await run("release.sh", [
    "--dry-run",
    "--targets",
    "x86_64-unknown-linux-gnu,nope",
  ]);
  assert.equal(unknown.code, 2);
  assert.equal(unknown.stderr.trim().split("\n").length, 1, unknown.stderr);
});
