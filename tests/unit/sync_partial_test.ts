/**
 * Members fetching the same large file share it while it arrives: chunks written into a temp
 * file are servable (verified) until the materialization ends; each member fetches its own
 * stripe of the file first, then the other stripes from the members they belong to.
 */
import assert from "node:assert/strict";
import { type Hash, hashKey, sha256 } from "../../src/chunk/mod.ts";
import { walkFileChunks } from "../../src/merkle/mod.ts";
import {
  materialize,
  type MaterializeSources,
  PartialChunks,
  STRIPE_BLOCK_CHUNKS,
  stripeFor,
  stripeOf,
} from "../../src/sync/mod.ts";
import { seededBytes } from "../helpers/bytes.ts";
import { withNode } from "../helpers/fake_remote.ts";

Deno.test("partial chunks: served verified while registered, null once forgotten or changed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fs-partial-" });
  const partial = new PartialChunks();
  try {
    const tmp = `${dir}/.filesync-tmp-1`;
    const data = seededBytes(7, 300_000);
    await Deno.writeFile(tmp, data);
    const a = data.subarray(0, 100_000);
    const b = data.subarray(100_000, 250_000);
    partial.add(sha256(a), tmp, 0, a.length);
    partial.add(sha256(b), tmp, 100_000, b.length);
    assert.equal(partial.size, 2);
    assert.deepEqual(await partial.read(sha256(a)), a);
    assert.deepEqual(await partial.read(sha256(b)), b);
    assert.equal(await partial.read(sha256(data)), null, "never registered");
    // Bytes changed under the registration: not served.
    const f = await Deno.open(tmp, { write: true });
    await f.seek(100_000, Deno.SeekMode.Start);
    await f.write(new Uint8Array([data[100_000] ^ 1]));
    f.close();
    assert.equal(await partial.read(sha256(b)), null);
    partial.forget(tmp);
    assert.equal(partial.size, 0);
    assert.equal(await partial.read(sha256(a)), null);
    // A registration whose file is gone reads as null, not an error.
    partial.add(sha256(a), `${dir}/gone`, 0, a.length);
    assert.equal(await partial.read(sha256(a)), null);
    partial.forget(`${dir}/gone`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("stripes: blocks dealt in turn to the fetching members, sorted by id", () => {
  assert.equal(stripeOf(0, 2), 0);
  assert.equal(stripeOf(STRIPE_BLOCK_CHUNKS - 1, 2), 0);
  assert.equal(stripeOf(STRIPE_BLOCK_CHUNKS, 2), 1);
  assert.equal(stripeOf(2 * STRIPE_BLOCK_CHUNKS, 2), 0);
  assert.equal(stripeOf(5 * STRIPE_BLOCK_CHUNKS, 3), 2);
  assert.deepEqual(stripeFor("c", ["c", "b"]), { index: 1, count: 2, others: ["b"] });
  assert.deepEqual(stripeFor("b", ["c", "b", "b"]), { index: 0, count: 2, others: ["c"] });
  assert.equal(stripeFor("x", ["b", "c"]), null);
});

Deno.test("materialize: a shared large file fetches its stripe first, serves it meanwhile, forgets it after", async () => {
  await withNode(async (store, remote) => {
    const content = seededBytes(11, 24 << 20);
    const rec = await remote.file("big.bin", content);
    const index = new Map<string, number>();
    let n = 0;
    for await (const c of walkFileChunks(rec.root, remote.store.packs)) {
      index.set(hashKey(c.hash), n++);
    }
    assert.ok(n > 2 * STRIPE_BLOCK_CHUNKS, `${n} chunks: enough for two stripes`);
    const partial = new PartialChunks();
    const calls: { hashes: Hash[]; from?: string[] }[] = [];
    let servedMeanwhile: Uint8Array | null = null;
    const sources: MaterializeSources = {
      nodes: remote.nodes,
      verified: false,
      async fetchChunks(hashes, onChunk, from) {
        // Tree nodes come this way too (a large file's tree is fetched ahead): count chunks.
        if (hashes.every((h) => index.has(hashKey(h)))) calls.push({ hashes, from });
        if (calls.length === 2 && from !== undefined) {
          // While the other stripe is fetched, this node already serves a chunk of its own.
          const mine = calls[0].hashes[0];
          for (let i = 0; i < 200 && servedMeanwhile === null; i++) {
            servedMeanwhile = await partial.read(mine);
            if (servedMeanwhile === null) await new Promise((r) => setTimeout(r, 10));
          }
        }
        await remote.fetchChunks(hashes, onChunk);
      },
    };
    const r = await materialize(store, rec, sources, {
      share: { chunks: partial, stripe: { index: 1, count: 2, others: ["peer-b"] } },
    });
    assert.equal(r.status, "written");
    assert.deepEqual(await Deno.readFile(`${store.root}/big.bin`), content);
    assert.equal(calls.length, 2);
    // First this node's stripe (odd blocks), from anyone; then the rest, from peer-b first.
    assert.equal(calls[0].from, undefined);
    assert.ok(calls[0].hashes.every((h) => stripeOf(index.get(hashKey(h))!, 2) === 1));
    assert.deepEqual(calls[1].from, ["peer-b"]);
    assert.ok(calls[1].hashes.every((h) => stripeOf(index.get(hashKey(h))!, 2) === 0));
    assert.equal(calls[0].hashes.length + calls[1].hashes.length, index.size);
    assert.ok(servedMeanwhile !== null, "a chunk of the temp file was served before the end");
    assert.deepEqual(sha256(servedMeanwhile!), calls[0].hashes[0]);
    assert.equal(partial.size, 0, "forgotten once the file is in place");
  });
});
