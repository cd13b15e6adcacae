/**
 * The scan workers' pool: with several jobs held per worker, every result still reaches the
 * job it belongs to (chunks streamed and final record), a failing file fails only itself, and
 * closing the pool settles every job it holds.
 */
import assert from "node:assert/strict";
import { DEFAULT_CHUNKER_OPTIONS, toHex } from "../../src/chunk/mod.ts";
import { type HashedFile, hashFile, HashFileError } from "../../src/sync/mod.ts";
import { HashPool } from "../../src/sync/hash_pool.ts";
import { seededBytes } from "../helpers/bytes.ts";

/** A directory of `sizes.length` files, file i holding sizes[i] bytes of its own content. */
async function filesOf(sizes: number[]): Promise<{ dir: string; paths: string[] }> {
  const dir = await Deno.makeTempDir({ prefix: "filesync-pool-" });
  const paths = sizes.map((_, i) => `${dir}/f${i}.bin`);
  for (let i = 0; i < sizes.length; i++) {
    await Deno.writeFile(paths[i], seededBytes(2 * i + 1, sizes[i]));
  }
  return { dir, paths };
}

/** Root and chunk list of a file as hashed alone, on this thread. */
async function expected(path: string): Promise<{ root: string; chunks: string[] }> {
  const r = await hashFile(path, DEFAULT_CHUNKER_OPTIONS);
  return { root: toHex(r.root), chunks: r.chunks.map((c) => `${c.offset}:${toHex(c.hash)}`) };
}

Deno.test("hash pool: many jobs per worker, each result reaches its own job", async () => {
  // Small files around a large one, so jobs queue on both workers and behind the large file.
  const sizes = Array.from({ length: 40 }, (_, i) => (i === 3 ? 3 << 20 : 1000 + 977 * i));
  const { dir, paths } = await filesOf(sizes);
  const pool = new HashPool(2, DEFAULT_CHUNKER_OPTIONS);
  try {
    const streamed = paths.map(() => [] as string[]);
    const results: HashedFile[] = await Promise.all(paths.map((p, i) =>
      pool.hash(
        p,
        (chunks) => {
          for (const c of chunks) streamed[i].push(`${c.offset}:${toHex(c.hash)}`);
        },
        undefined,
        sizes[i],
      )
    ));
    assert.equal(pool.backlog, 0);
    for (let i = 0; i < paths.length; i++) {
      const want = await expected(paths[i]);
      assert.equal(toHex(results[i].root), want.root, `root of file ${i}`);
      assert.equal(results[i].size, sizes[i]);
      // Chunks arrive through onChunks (the returned list is then empty), each job its own.
      assert.deepEqual([
        ...streamed[i],
        ...results[i].chunks.map((c) => `${c.offset}:${toHex(c.hash)}`),
      ], want.chunks);
    }
  } finally {
    pool.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hash pool: a missing file fails alone, its neighbours in the same worker succeed", async () => {
  const { dir, paths } = await filesOf([5000, 6000, 7000, 8000, 9000, 10_000]);
  const pool = new HashPool(1, DEFAULT_CHUNKER_OPTIONS);
  try {
    const gone = `${dir}/missing.bin`;
    const all = [...paths.slice(0, 3), gone, ...paths.slice(3)];
    const settled = await Promise.allSettled(all.map((p) => pool.hash(p, () => {})));
    for (let i = 0; i < all.length; i++) {
      if (all[i] === gone) {
        assert.equal(settled[i].status, "rejected");
        const err = (settled[i] as PromiseRejectedResult).reason;
        assert.ok(err instanceof HashFileError && err.code === "gone", String(err));
      } else {
        assert.equal(settled[i].status, "fulfilled", `file ${i}`);
        const r = (settled[i] as PromiseFulfilledResult<HashedFile>).value;
        assert.equal(toHex(r.root), (await expected(all[i])).root);
      }
    }
  } finally {
    pool.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hash pool: close settles the jobs held by workers and those still queued", async () => {
  const { dir, paths } = await filesOf(Array.from({ length: 12 }, () => 4 << 20));
  const pool = new HashPool(2, DEFAULT_CHUNKER_OPTIONS);
  try {
    const jobs = paths.map((p) => pool.hash(p, () => {}));
    assert.equal(pool.backlog, paths.length);
    pool.close();
    const settled = await Promise.allSettled(jobs);
    // Every job settles (none hangs); those not finished before close are rejected.
    assert.equal(settled.length, paths.length);
    assert.ok(settled.some((s) => s.status === "rejected"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A pool whose workers the test can reach (to make one fail as an uncaught error would). */
function poolWithWorkers(size: number): { pool: HashPool; workers: Worker[] } {
  const workers: Worker[] = [];
  const Real = globalThis.Worker;
  globalThis.Worker = class extends Real {
    constructor(url: string | URL, options?: WorkerOptions) {
      super(url, options);
      workers.push(this);
    }
  };
  try {
    return { pool: new HashPool(size, DEFAULT_CHUNKER_OPTIONS), workers };
  } finally {
    globalThis.Worker = Real;
  }
}

/** What Deno does to a worker with an uncaught error: it stops, and its onerror fires. */
function crash(w: Worker): void {
  w.terminate();
  w.onerror?.(new ErrorEvent("error", { message: "simulated crash", cancelable: true }));
}

Deno.test("hash pool: a failed worker is dropped; later jobs go to the others, or inline", async () => {
  const sizes = Array.from({ length: 12 }, (_, i) => 2000 + 100 * i);
  const { dir, paths } = await filesOf(sizes);
  const { pool, workers } = poolWithWorkers(2);
  try {
    await Promise.all(paths.slice(0, 2).map((p) => pool.hash(p, () => {})));
    crash(workers[0]);
    // Every later job ends, with the right result, on the worker left.
    for (
      const r of await Promise.all(
        paths.slice(2, 7).map((p, i) => pool.hash(p, () => {}, undefined, sizes[i + 2])),
      )
    ) {
      assert.ok(r.size > 0);
    }
    crash(workers[1]);
    // None left: hashed on the calling thread.
    const inline = await Promise.all(paths.slice(7).map((p) => pool.hash(p, () => {})));
    for (let i = 0; i < inline.length; i++) {
      assert.equal(toHex(inline[i].root), (await expected(paths[7 + i])).root);
    }
  } finally {
    pool.close();
    await Deno.remove(dir, { recursive: true });
  }
  await assert.rejects(pool.hash(paths[0], () => {}), /closed/);
});
