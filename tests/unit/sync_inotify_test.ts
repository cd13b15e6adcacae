/**
 * The inotify tree watch (src/sync/inotify.ts): events under every directory, new directories
 * watched with their contents reported, excluded and moved-away directories not watched, and
 * close() ending a pending iteration. Linux only (elsewhere the watcher uses Deno.watchFs).
 */
import assert from "node:assert/strict";
import { InotifyTree, type TreeEvents, watchTree } from "../../src/sync/inotify.ts";

const LINUX = Deno.build.os === "linux";

/** Collects a watch's events in the background; waitFor() polls what arrived, bounded in time. */
class Collector {
  readonly seen = new Set<string>();
  rescans = 0;
  readonly done: Promise<void>;
  constructor(watch: AsyncIterable<TreeEvents>) {
    this.done = (async () => {
      for await (const e of watch) {
        for (const p of e.paths) this.seen.add(p);
        if (e.rescan) this.rescans++;
      }
    })();
  }
  async waitFor(paths: string[], timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!paths.every((p) => this.seen.has(p))) {
      if (Date.now() > deadline) {
        throw new Error(`not seen: ${paths.filter((p) => !this.seen.has(p)).join(", ")}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

async function withTree(
  fn: (root: string, tree: InotifyTree, events: Collector) => Promise<void>,
  exclude?: (rel: string) => boolean,
) {
  const root = Deno.realPathSync(await Deno.makeTempDir({ prefix: "filesync-inotify-" }));
  const tree = InotifyTree.open(root, { exclude })!;
  assert.ok(tree, "inotify is available on Linux");
  const events = new Collector(tree);
  try {
    await fn(root, tree, events);
  } finally {
    tree.close();
    await events.done;
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test({
  name: "inotify: files created, written and removed at any depth are reported",
  ignore: !LINUX,
  async fn() {
    await withTree(async (root, _tree, events) => {
      await Deno.mkdir(`${root}/a/b`, { recursive: true });
      await events.waitFor([`${root}/a`]);
      // Written straight after: the new directories are watched (or their contents listed).
      await Deno.writeTextFile(`${root}/a/b/new.txt`, "x");
      await Deno.writeTextFile(`${root}/top.txt`, "y");
      await events.waitFor([`${root}/a/b`, `${root}/a/b/new.txt`, `${root}/top.txt`]);
      events.seen.clear();
      await Deno.remove(`${root}/a/b/new.txt`);
      await events.waitFor([`${root}/a/b/new.txt`]);
    });
  },
});

Deno.test({
  name: "inotify: a directory moved or copied in is watched and everything in it is reported",
  ignore: !LINUX,
  async fn() {
    const outside = await Deno.makeTempDir({ prefix: "filesync-inotify-out-" });
    try {
      await Deno.mkdir(`${outside}/tree/deep/er`, { recursive: true });
      await Deno.writeTextFile(`${outside}/tree/deep/er/f.txt`, "f");
      await withTree(async (root, tree, events) => {
        const before = tree.watchCount;
        await Deno.rename(`${outside}/tree`, `${root}/tree`);
        await events.waitFor([`${root}/tree`, `${root}/tree/deep/er/f.txt`]);
        assert.equal(tree.watchCount, before + 3);
        await Deno.writeTextFile(`${root}/tree/deep/er/g.txt`, "g");
        await events.waitFor([`${root}/tree/deep/er/g.txt`]);
        // Moved within the tree: reported under the new path only.
        await Deno.rename(`${root}/tree`, `${root}/moved`);
        await events.waitFor([`${root}/moved`, `${root}/moved/deep/er/g.txt`]);
        events.seen.clear();
        await Deno.writeTextFile(`${root}/moved/deep/er/h.txt`, "h");
        await events.waitFor([`${root}/moved/deep/er/h.txt`]);
        assert.ok(![...events.seen].some((p) => p.startsWith(`${root}/tree/`)));
        assert.equal(tree.watchCount, before + 3);
        // Moved out: its watches go.
        await Deno.rename(`${root}/moved`, `${outside}/back`);
        await events.waitFor([`${root}/moved`]);
        assert.equal(tree.watchCount, before);
      });
    } finally {
      await Deno.remove(outside, { recursive: true });
    }
  },
});

Deno.test({
  name: "inotify: an excluded directory is not watched, nor anything under it",
  ignore: !LINUX,
  async fn() {
    const exclude = (rel: string) => rel === ".filesync";
    await withTree(async (root, tree, events) => {
      await Deno.mkdir(`${root}/.filesync/kv`, { recursive: true });
      await events.waitFor([`${root}/.filesync`]);
      assert.equal(tree.watchCount, 1, "the root only");
      await Deno.writeTextFile(`${root}/.filesync/kv/db`, "x");
      await Deno.writeTextFile(`${root}/marker`, "m");
      await events.waitFor([`${root}/marker`]);
      assert.ok(![...events.seen].some((p) => p.startsWith(`${root}/.filesync/`)));
    }, exclude);
  },
});

Deno.test({
  name: "inotify: close() ends an iteration that waits for events",
  ignore: !LINUX,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "filesync-inotify-" });
    try {
      const tree = InotifyTree.open(Deno.realPathSync(root))!;
      const it = tree[Symbol.asyncIterator]();
      const next = it.next();
      await new Promise((r) => setTimeout(r, 50));
      tree.close();
      assert.equal((await next).done, true);
      tree.close(); // twice is harmless
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "inotify: a root that cannot be watched is a clear error",
  ignore: !LINUX,
  fn() {
    assert.throws(() => InotifyTree.open("/nonexistent/filesync-inotify"), /cannot watch/);
  },
});

Deno.test("watchTree: the Deno.watchFs fallback reports changes too", async () => {
  const root = Deno.realPathSync(await Deno.makeTempDir({ prefix: "filesync-inotify-" }));
  const watch = watchTree(root, { denoWatch: true });
  const events = new Collector(watch);
  try {
    const deadline = Date.now() + 5_000;
    let i = 0;
    // Deno's watcher may start a moment after watchFs returns: write until it is heard.
    while (!events.seen.has(`${root}/f${i}`)) {
      assert.ok(Date.now() < deadline, "no event within 5 s");
      await Deno.writeTextFile(`${root}/f${++i}`, "x");
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    watch.close();
    await events.done;
    await Deno.remove(root, { recursive: true });
  }
});
