/** Shared helpers: mapLimit and the buffer pool. */
import assert from "node:assert/strict";
import { copyRange, giveBuffer, mapLimit, openPositional, takeBuffer } from "../../src/util/mod.ts";

Deno.test("mapLimit: results in order, at most `limit` at once, first failure thrown", async () => {
  let running = 0;
  let peak = 0;
  const out = await mapLimit([5, 1, 4, 2, 3], 2, async (n) => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setTimeout(r, n));
    running--;
    return n * 10;
  });
  assert.deepEqual(out, [50, 10, 40, 20, 30]);
  assert.equal(peak, 2);
  const started: number[] = [];
  await assert.rejects(
    mapLimit([1, 2, 3, 4], 1, (n) => {
      started.push(n);
      return n === 2 ? Promise.reject(new Error("two")) : Promise.resolve(n);
    }),
    /two/,
  );
  assert.deepEqual(started, [1, 2], "no call starts after a failure");
});

Deno.test("buffer pool: reuses its own buffers once each, ignores foreign and repeated gives", () => {
  const a = takeBuffer(60_000);
  assert.equal(a.length, 60_000);
  a.fill(1);
  giveBuffer(a);
  giveBuffer(a); // a second give of the same buffer is ignored
  const b = takeBuffer(50_000);
  assert.equal(b.buffer, a.buffer, "the returned buffer is reused");
  const c = takeBuffer(50_000);
  assert.notEqual(c.buffer, b.buffer, "and handed out only once");
  // A buffer the pool did not make is never handed out again.
  const foreign = new Uint8Array(65_536);
  giveBuffer(foreign);
  giveBuffer(foreign.subarray(10, 20));
  for (let i = 0; i < 4; i++) assert.notEqual(takeBuffer(65_536).buffer, foreign.buffer);
  // Beyond the largest class: a plain allocation of exactly that size.
  const big = takeBuffer(3 * 1024 * 1024);
  assert.equal(big.buffer.byteLength, 3 * 1024 * 1024);
});

Deno.test("copyRange: a kernel copy to another offset, extending the target; false when it cannot", async () => {
  const dir = await Deno.makeTempDir({ prefix: "filesync-copyrange-" });
  try {
    const src = new Uint8Array(3_000_000).map((_, i) => (i * 31 + 7) & 0xff);
    await Deno.writeFile(`${dir}/src`, src);
    await Deno.writeFile(`${dir}/dst`, new Uint8Array(100).fill(9));
    if (Deno.build.os !== "linux") {
      assert.equal(await copyRange(`${dir}/src`, 0, `${dir}/dst`, 0, 10), false);
      return;
    }
    assert.equal(await copyRange(`${dir}/src`, 1_000, `${dir}/dst`, 50, 2_000_000), true);
    const dst = await Deno.readFile(`${dir}/dst`);
    assert.equal(dst.length, 2_000_050);
    assert.ok(dst.subarray(0, 50).every((b) => b === 9), "bytes before the range kept");
    assert.ok(dst.subarray(50).every((b, i) => b === src[1_000 + i]), "range copied");
    // The source ends before the range does, or is missing: false, and the caller writes.
    assert.equal(await copyRange(`${dir}/src`, 2_999_000, `${dir}/dst`, 0, 5_000), false);
    assert.equal(await copyRange(`${dir}/nope`, 0, `${dir}/dst`, 0, 10), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const ffi of [true, false]) {
  Deno.test(`openPositional (${ffi ? "pread" : "seek and read"}): concurrent reads at offsets, short reads, deferred close`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "fs-pread-" });
    try {
      const data = new Uint8Array(1 << 20);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 9)) & 0xff;
      await Deno.writeFile(`${dir}/f`, data);
      const f = await openPositional(`${dir}/f`, { ffi });
      // Many reads on one handle at once: none may see another's offset.
      const offsets = Array.from({ length: 64 }, (_, i) => (i * 15_361) % (data.length - 4096));
      const bufs = offsets.map(() => new Uint8Array(4096));
      const whole = await Promise.all(offsets.map((o, i) => f.readAt(o, bufs[i])));
      assert.ok(whole.every((w) => w));
      offsets.forEach((o, i) => assert.deepEqual(bufs[i], data.subarray(o, o + 4096)));
      // Into a view in the middle of a larger buffer: only the view is written.
      const outer = new Uint8Array(10_000);
      assert.equal(await f.readAt(500, outer.subarray(1000, 5000)), true);
      assert.deepEqual(outer.subarray(1000, 5000), data.subarray(500, 4500));
      assert.ok(outer.subarray(0, 1000).every((b) => b === 0));
      assert.ok(outer.subarray(5000).every((b) => b === 0));
      // Past the end: false, with what there was read.
      const tail = new Uint8Array(100);
      assert.equal(await f.readAt(data.length - 10, tail), false);
      assert.deepEqual(tail.subarray(0, 10), data.subarray(data.length - 10));
      // A read started before close() completes; one started after fails.
      const last = new Uint8Array(65_536);
      const pending = f.readAt(1000, last);
      f.close();
      f.close(); // idempotent
      assert.equal(await pending, true);
      assert.deepEqual(last, data.subarray(1000, 1000 + 65_536));
      await assert.rejects(() => f.readAt(0, new Uint8Array(1)));
      await assert.rejects(() => openPositional(`${dir}/missing`, { ffi }), Deno.errors.NotFound);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
