/**
 * The CLI end to end, as a user runs it: scan, inspect and snapshots print what README says,
 * and every failure is one clear line with a non-zero exit, never a stack trace.
 */
import assert from "node:assert/strict";
import { runCli } from "../helpers/cli.ts";

async function makeTree(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "filesync-cli-" });
  await Deno.mkdir(`${dir}/docs`);
  await Deno.writeTextFile(`${dir}/docs/a.txt`, "hello\n");
  const big = new Uint8Array(600_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
  await Deno.writeFile(`${dir}/big.bin`, big);
  return dir;
}

function assertCleanError(run: { code: number; stderr: string }, pattern: RegExp) {
  assert.notEqual(run.code, 0);
  assert.match(run.stderr, pattern);
  assert.doesNotMatch(run.stderr, /\n\s+at /, "no stack trace");
  assert.equal(run.stderr.trim().split("\n").length, 1, `one line: ${run.stderr}`);
}

Deno.test("cli: scan --json reports files, bytes and the root; a rescan reads nothing", async () => {
  const dir = await makeTree();
  try {
    const first = await runCli(["scan", dir, "--json"]);
    assert.equal(first.code, 0, first.stderr);
    const a = JSON.parse(first.stdout);
    assert.equal(a.files, 2);
    assert.equal(a.dirs, 1);
    assert.equal(a.bytes, 600_006);
    assert.match(a.root, /^[0-9a-f]{64}$/);
    const second = JSON.parse((await runCli(["scan", dir, "--json"])).stdout);
    assert.equal(second.root, a.root);
    assert.equal(second.hashedFiles, 0);
    const human = await runCli(["scan", dir]);
    assert.equal(human.code, 0);
    assert.match(human.stdout, new RegExp(`root ${a.root}`));
    assert.match(human.stdout, /2 files, 1 directories/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: inspect --json lists chunks that tile the file", async () => {
  const dir = await makeTree();
  try {
    const run = await runCli(["inspect", `${dir}/big.bin`, "--json"]);
    assert.equal(run.code, 0, run.stderr);
    const j = JSON.parse(run.stdout);
    assert.equal(j.size, 600_000);
    assert.match(j.root, /^[0-9a-f]{64}$/);
    let offset = 0;
    for (const c of j.chunks) {
      assert.equal(c.offset, offset);
      assert.match(c.hash, /^[0-9a-f]{64}$/);
      offset += c.length;
    }
    assert.equal(offset, 600_000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: snapshot create, list and diff", async () => {
  const dir = await makeTree();
  try {
    assert.equal((await runCli(["snapshot", "create", dir, "before"])).code, 0);
    await Deno.writeTextFile(`${dir}/docs/a.txt`, "changed\n");
    await Deno.writeTextFile(`${dir}/docs/new.txt`, "new\n");
    await Deno.remove(`${dir}/big.bin`);
    const created = await runCli(["snapshot", "create", dir, "after", "--json"]);
    assert.equal(created.code, 0, created.stderr);
    assert.equal(JSON.parse(created.stdout).label, "after");
    const list = JSON.parse((await runCli(["snapshot", "list", dir, "--json"])).stdout);
    assert.deepEqual(list.map((s: { label: string }) => s.label), ["before", "after"]);
    const diff = await runCli(["snapshot", "diff", dir, "before", "after", "--json"]);
    assert.equal(diff.code, 0, diff.stderr);
    const d = JSON.parse(diff.stdout);
    assert.deepEqual(d.added, ["docs/new.txt"]);
    assert.deepEqual(d.removed, ["big.bin"]);
    // docs/ itself changes too: its mtime moved when a file was added to it.
    assert.ok(d.changed.includes("docs/a.txt"));
    const human = await runCli(["snapshot", "diff", dir, "before", "after"]);
    assert.match(human.stdout, /^\+ docs\/new\.txt$/m);
    assert.match(human.stdout, /^- big\.bin$/m);
    assertCleanError(
      await runCli(["snapshot", "diff", dir, "before", "nope"]),
      /no snapshot named "nope"/,
    );
    assertCleanError(
      await runCli(["snapshot", "create", dir, "before"]),
      /exists already/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: errors are one clear line and a non-zero exit", async () => {
  assertCleanError(await runCli(["scan", "/nonexistent/filesync-dir"]), /does not exist/);
  assertCleanError(await runCli(["inspect", "/nonexistent/file"]), /does not exist/);
  const dir = await makeTree();
  try {
    assertCleanError(await runCli(["scan", `${dir}/big.bin`]), /is not a directory/);
    assertCleanError(await runCli(["inspect", dir]), /not a regular file/);
    const usage = await runCli(["scan"]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /missing required argument/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
