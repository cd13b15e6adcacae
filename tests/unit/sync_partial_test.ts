/**
 * Members fetching the same large file share it while it arrives: chunks written into a temp
 * file are servable (verified) until the materialization ends; each member fetches its own
 * stripe of the file first, then the other stripes from the members they belong to.
 */
import assert from "node:assert/strict";
import { type Hash, hashEquals, hashFromKey, hashKey, sha256 } from "../../src/chunk/mod.ts";
import type { IndexRecord } from "../../src/fsm/mod.ts";
import { walkFileChunks } from "../../src/merkle/mod.ts";
import {
  materialize,
  type MaterializeSources,
  PartialChunks,
  prefetchObjects,
  type RemoteObjects,
  type Stripe,
  STRIPE_BLOCK_CHUNKS,
  stripeBlockChunks,
  stripeFor,
  stripeOf,
  stripeOfHash,
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
  const large = STRIPE_BLOCK_CHUNKS;
  assert.deepEqual(stripeFor("c", ["c", "b"]), {
    index: 1,
    count: 2,
    others: ["b"],
    blockChunks: large,
  });
  assert.deepEqual(stripeFor("b", ["c", "b", "b"]), {
    index: 0,
    count: 2,
    others: ["c"],
    blockChunks: large,
  });
  assert.equal(stripeFor("x", ["b", "c"]), null);
  // A file of a few MiB is dealt in small blocks, so that every member has a share of it.
  assert.equal(stripeBlockChunks(64 << 20), large);
  assert.equal(stripeBlockChunks(3 << 20), 4);
  assert.equal(stripeFor("b", ["b", "c"], 3 << 20)!.blockChunks, 4);
  assert.equal(stripeOf(4, 2, 4), 1);
  assert.equal(stripeOf(8, 2, 4), 0);
});

Deno.test("partial chunks: a request waits for an expected chunk, not for others", async () => {
  const dir = await Deno.makeTempDir({ prefix: "filesync-partial-" });
  const partial = new PartialChunks();
  try {
    const a = seededBytes(3, 5000);
    const b = seededBytes(4, 6000);
    const tmp = `${dir}/.tmp`;
    await Deno.writeFile(tmp, a);
    // Not expected: answered at once.
    assert.equal(await partial.waitFor(sha256(a), 10_000), false);
    partial.expect(tmp, [sha256(a), sha256(b)]);
    const waiting = partial.waitFor(sha256(a), 10_000);
    const also = partial.waitFor(sha256(a), 10_000);
    partial.add(sha256(a), tmp, 0, a.length); // written: both waiters go on
    assert.equal(await waiting, true);
    assert.equal(await also, true);
    assert.deepEqual(await partial.read(sha256(a)), a);
    // Expected but late: the wait ends at its limit.
    assert.equal(await partial.waitFor(sha256(b), 20), false);
    // No longer on its way (the fetch ended without it): a waiter hears it at once.
    const c = seededBytes(5, 700);
    partial.expect(tmp, [sha256(c)]);
    const dropped = partial.waitFor(sha256(c), 10_000);
    partial.unexpect("another-file", [sha256(c)]); // not that file's to drop
    partial.unexpect(tmp, [sha256(c)]);
    assert.equal(await dropped, false);
    assert.equal(await partial.waitFor(sha256(c), 10_000), false);
    // Given up (the file is forgotten): a waiter hears it at once.
    const given = partial.waitFor(sha256(b), 10_000);
    partial.forget(tmp);
    assert.equal(await given, false);
    assert.equal(await partial.waitFor(sha256(b), 10_000), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
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
    /** Asked while our stripe was being fetched: for one of ours, and for one of the other's. */
    let waitedForOurs: Promise<boolean> | null = null;
    let waitedForTheirs: Promise<boolean> | null = null;
    const sources: MaterializeSources = {
      nodes: remote.nodes,
      verified: false,
      async fetchChunks(hashes, onChunk, from) {
        // Tree nodes come this way too (a large file's tree is fetched ahead): count chunks.
        if (hashes.every((h) => index.has(hashKey(h)))) calls.push({ hashes, from });
        if (calls.length === 1 && waitedForOurs === null) {
          waitedForOurs = partial.waitFor(hashes[0], 60_000);
          const theirs = [...index].find(([, i]) => stripeOf(i, 2) === 0)!;
          waitedForTheirs = partial.waitFor(hashFromKey(theirs[0]), 60_000);
        }
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
      share: {
        chunks: partial,
        stripe: { index: 1, count: 2, others: ["peer-b"], blockChunks: STRIPE_BLOCK_CHUNKS },
      },
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
    assert.equal(await waitedForOurs, true, "a request for our stripe waited for it");
    assert.equal(await waitedForTheirs, false, "a request for the other stripe did not wait");
  });
});

Deno.test("materialize: a member first seen while this node fetches splits what is left again", async () => {
  await withNode(async (store, remote) => {
    const content = seededBytes(12, 24 << 20);
    const rec = await remote.file("big.bin", content);
    const index = new Map<string, number>();
    let n = 0;
    for await (const c of walkFileChunks(rec.root, remote.store.packs)) {
      index.set(hashKey(c.hash), n++);
    }
    const partial = new PartialChunks();
    const calls: { hashes: Hash[]; from?: string[]; delivered: number; aborted: boolean }[] = [];
    // Alone at first; peer-b is seen once a quarter of the file has arrived.
    let seen: Stripe | null = null;
    const stripeNow = { index: 1, count: 2, others: ["peer-b"], blockChunks: STRIPE_BLOCK_CHUNKS };
    const sources: MaterializeSources = {
      nodes: remote.nodes,
      verified: false,
      async fetchChunks(hashes, onChunk, from, signal) {
        if (!hashes.every((h) => index.has(hashKey(h)))) {
          return await remote.fetchChunks(hashes, onChunk); // tree nodes fetched ahead
        }
        const call = { hashes, from, delivered: 0, aborted: false };
        calls.push(call);
        for (const h of hashes) {
          if (signal?.aborted) {
            call.aborted = true;
            throw signal.reason;
          }
          await remote.fetchChunks([h], onChunk);
          call.delivered++;
          if (calls.length === 1 && call.delivered === Math.floor(n / 4)) seen = stripeNow;
          // Slow enough for the stripe check (every 250 ms) to run while chunks arrive.
          if (seen !== null) await new Promise((r) => setTimeout(r, 2));
        }
      },
    };
    const r = await materialize(store, rec, sources, {
      share: { chunks: partial, stripe: null, restripe: () => seen },
    });
    assert.equal(r.status, "written");
    assert.deepEqual(await Deno.readFile(`${store.root}/big.bin`), content);
    assert.equal(calls.length, 3, JSON.stringify(calls.map((c) => [c.hashes.length, c.from])));
    // 1: everything, alone, cut short once peer-b was seen.
    assert.equal(calls[0].hashes.length, n);
    assert.ok(calls[0].aborted && calls[0].delivered < n);
    const fetched = new Set(calls[0].hashes.slice(0, calls[0].delivered).map(hashKey));
    // 2: the rest of this node's stripe (odd blocks), from anyone.
    assert.equal(calls[1].from, undefined);
    assert.ok(calls[1].hashes.every((h) => stripeOf(index.get(hashKey(h))!, 2) === 1));
    assert.ok(calls[1].hashes.every((h) => !fetched.has(hashKey(h))));
    // 3: what is left of peer-b's stripe, from peer-b first.
    assert.deepEqual(calls[2].from, ["peer-b"]);
    assert.ok(calls[2].hashes.every((h) => stripeOf(index.get(hashKey(h))!, 2) === 0));
    assert.ok(calls[2].hashes.every((h) => !fetched.has(hashKey(h))));
    assert.equal(calls[0].delivered + calls[1].hashes.length + calls[2].hashes.length, n);
    assert.equal(partial.size, 0);
  });
});

Deno.test("prefetch: members fetching one batch split its chunks, serving theirs from memory", async () => {
  await withNode(async (store, remote) => {
    const recs: IndexRecord[] = [];
    for (let i = 0; i < 40; i++) {
      recs.push(await remote.file(`s/f${i}.bin`, seededBytes(60 + i, 2_000 + 500 * i)));
    }
    const chunkHashes: Hash[] = [];
    for (const r of recs) {
      for await (const c of walkFileChunks(r.root, remote.store.packs)) chunkHashes.push(c.hash);
    }
    const partial = new PartialChunks();
    const stripe = stripeFor("peer-c", ["peer-b", "peer-c"])!;
    const calls: { hashes: Hash[]; preferred?: string[]; strictly?: boolean }[] = [];
    /** While our stripe is fetched: a request for one of ours waits, one for theirs does not. */
    let waits: Promise<boolean>[] = [];
    const objects: RemoteObjects = {
      async fetch(hashes, onObject, preferred, strictly) {
        calls.push({ hashes, preferred, strictly });
        if (calls.length === 2) {
          const theirs = chunkHashes.find((h) => !hashes.some((o) => hashEquals(o, h)))!;
          waits = [partial.waitFor(hashes[0], 60_000), partial.waitFor(theirs, 60_000)];
        }
        return await remote.deliver(hashes, onObject);
      },
    };
    const owner = "prefetch-test";
    const ahead = await prefetchObjects(store, objects, recs, { chunks: partial, owner, stripe });
    assert.equal(calls.length, 3, "roots, then our stripe of the chunks, then theirs");
    const [roots, ours, theirs] = calls;
    assert.equal(roots.hashes.length, recs.length); // tree nodes are not dealt out
    assert.ok(ours.hashes.every((h) => stripeOfHash(h, 2) === stripe.index));
    assert.equal(ours.strictly ?? false, false);
    assert.ok(theirs.hashes.every((h) => stripeOfHash(h, 2) !== stripe.index));
    assert.deepEqual(theirs.preferred, ["peer-b"]);
    assert.equal(theirs.strictly, true);
    assert.ok(ours.hashes.length > 0 && theirs.hashes.length > 0);
    assert.deepEqual(await Promise.all(waits), [true, false]);
    // Every chunk is servable from memory until the batch is written, then forgotten.
    for (const h of [...ours.hashes, ...theirs.hashes]) {
      assert.deepEqual(await partial.read(h), ahead.get(h));
    }
    partial.forget(owner);
    assert.equal(partial.size, 0);
    assert.equal(await partial.read(ours.hashes[0]), null);
  });
});
