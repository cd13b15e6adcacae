/**
 * rechunkStream must yield exactly chunkStream's chunks for the new bytes, whatever the
 * previous list says: edits of every shape, reads of every size, lists that lie.
 */
import assert from "node:assert/strict";
import { type Chunk, chunkBuffer, rechunkStream } from "../../src/chunk/mod.ts";
import { rng as makeRng } from "../helpers/fsm.ts";
import { sequentialReader } from "../helpers/bytes.ts";

/** Small chunks so a few hundred KiB hold hundreds of them. */
const OPTS = { minSize: 256, avgSize: 1024, maxSize: 4096 };

async function rechunk(data: Uint8Array, previous: Chunk[], step = 1 << 20): Promise<Chunk[]> {
  const out: Chunk[] = [];
  for await (const c of rechunkStream(sequentialReader(data, step), previous, OPTS)) out.push(c);
  return out;
}

function randomBytes(rng: () => number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rng() * 256);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

type Edit = (data: Uint8Array, rng: () => number) => Uint8Array;

const EDITS: Record<string, Edit> = {
  "unchanged": (d) => d,
  "insert one byte": (d, r) => {
    const at = Math.floor(r() * d.length);
    return concat(d.subarray(0, at), new Uint8Array([0x42]), d.subarray(at));
  },
  "delete a range": (d, r) => {
    const at = Math.floor(r() * d.length);
    return concat(d.subarray(0, at), d.subarray(Math.min(d.length, at + 5000)));
  },
  "overwrite 4 KiB in place": (d, r) => {
    const out = d.slice();
    const at = Math.floor(r() * (d.length - 4096));
    out.set(randomBytes(r, 4096), at);
    return out;
  },
  "append": (d, r) => concat(d, randomBytes(r, 3000)),
  "truncate": (d, r) => d.subarray(0, Math.floor(d.length * (0.3 + 0.6 * r()))),
  "prepend": (d, r) => concat(randomBytes(r, 777), d),
  "swap halves": (d) => concat(d.subarray(d.length >> 1), d.subarray(0, d.length >> 1)),
  "several edits": (d, r) => {
    let out = d;
    for (let i = 0; i < 5; i++) out = EDITS["insert one byte"](EDITS["delete a range"](out, r), r);
    return out;
  },
  "all new": (d, r) => randomBytes(r, d.length),
  "empty": () => new Uint8Array(0),
  "zeros": (d) => new Uint8Array(d.length),
};

for (const [name, edit] of Object.entries(EDITS)) {
  Deno.test(`rechunkStream: ${name} gives chunkStream's chunks`, async () => {
    for (let seed = 1; seed <= 6; seed++) {
      const rng = makeRng(seed * 7919 + name.length);
      const before = randomBytes(rng, 50_000 + Math.floor(rng() * 250_000));
      const after = edit(before, rng);
      const previous = chunkBuffer(before, OPTS);
      const want = chunkBuffer(after, OPTS);
      // Odd read sizes: chunks and the window's refills fall anywhere.
      for (const step of [1 << 20, 4093, 65_537]) {
        assert.deepEqual(await rechunk(after, previous, step), want, `seed ${seed}, step ${step}`);
      }
    }
  });
}

// A list cut with other options is outside the contract (its chunks may end where these
// options would not cut): the scanner only guides with lists of the cluster's fixed options.
Deno.test("rechunkStream: a previous list that lies changes nothing", async () => {
  const rng = makeRng(99);
  const data = randomBytes(rng, 200_000);
  const want = chunkBuffer(data, OPTS);
  const lies: Record<string, Chunk[]> = {
    "shifted offsets and lengths": want.map((c) => ({ ...c, length: c.length + 1 })),
    "the right chunks in reverse order": want.slice().reverse(),
    "chunks of another file": chunkBuffer(randomBytes(rng, 200_000), OPTS),
    "a too long last chunk": [...want.slice(0, -1), { ...want.at(-1)!, length: 1 << 20 }],
    "no list": [],
  };
  for (const [name, previous] of Object.entries(lies)) {
    assert.deepEqual(await rechunk(data, previous), want, name);
  }
});

Deno.test("rechunkStream: default options on a few MiB, one insert", async () => {
  const rng = makeRng(5);
  const before = randomBytes(rng, 6 << 20);
  const after = concat(before.subarray(0, 3_000_000), new Uint8Array([1]), before.subarray(3e6));
  const previous = chunkBuffer(before);
  const got: Chunk[] = [];
  for await (const c of rechunkStream(sequentialReader(after, 1 << 20), previous)) got.push(c);
  assert.deepEqual(got, chunkBuffer(after));
});
