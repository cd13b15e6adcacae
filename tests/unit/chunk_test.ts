/**
 * The Rabin rolling hash and the content-defined chunker: the polynomial and tables checked
 * against independent GF(2) arithmetic, boundaries against a naive reference chunker, committed
 * golden vectors under every way of splitting the input, shift resistance, the file and stream
 * entry points and option validation.
 *
 * Regenerate the golden vectors (only after a deliberate format change, which invalidates every
 * stored chunk list) with FILESYNC_UPDATE_GOLDEN=1 deno test -A tests/unit/chunk_test.ts.
 */
import assert from "node:assert/strict";
import {
  appendByte,
  type Chunk,
  chunkBuffer,
  type ChunkerOptions,
  chunkFile,
  chunkStream,
  ContentChunker,
  DEFAULT_CHUNKER_OPTIONS,
  fingerprint,
  MAX_CHUNK_SIZE_LIMIT,
  MOD_TABLE,
  OUT_TABLE,
  POLYNOMIAL,
  POLYNOMIAL_DEGREE,
  RollingRabin,
  sha256,
  toHex,
  validateChunkerOptions,
  WINDOW_SIZE,
} from "../../src/chunk/mod.ts";

const GOLDEN_URL = new URL("./testdata/chunk_golden.json", import.meta.url);
const SMALL: ChunkerOptions = { minSize: 1024, avgSize: 4096, maxSize: 16384 };

// ---------------------------------------------------------------------------------------------
// Helpers

/** Deterministic bytes: xorshift32 (13, 17, 5), each state written little-endian. */
function seededBytes(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed | 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x;
    out[i + 1] = x >>> 8;
    out[i + 2] = x >>> 16;
    out[i + 3] = x >>> 24;
  }
  return out;
}

/** A small deterministic PRNG for picking positions: integers in [0, n). */
function seededInts(seed: number): (n: number) => number {
  let x = seed | 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

/** The input as an async stream of `size`-byte pieces. */
async function* piecesOf(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function collect(chunks: AsyncIterable<Chunk>): Promise<Chunk[]> {
  const out: Chunk[] = [];
  for await (const c of chunks) out.push(c);
  return out;
}

type Row = [offset: number, length: number, hash: string];
const rows = (chunks: Chunk[]): Row[] => chunks.map((c) => [c.offset, c.length, toHex(c.hash)]);

/**
 * The chunking rule written as plainly as possible: at every candidate end p, recompute the
 * fingerprint of the 64 bytes before it from scratch. Slow, and independent of the chunker's
 * skipping, window bookkeeping and two-lane loop.
 */
function referenceCuts(data: Uint8Array, opts: ChunkerOptions, magic: number): number[] {
  const mask = opts.avgSize - 1;
  const cuts: number[] = [];
  let start = 0;
  while (start < data.length) {
    let end = Math.min(data.length, start + opts.maxSize);
    for (let p = start + opts.minSize; p <= end; p++) {
      if ((fingerprint(data, p - WINDOW_SIZE, p) & mask) === magic) {
        end = p;
        break;
      }
    }
    cuts.push(end);
    start = end;
  }
  return cuts;
}

const ends = (chunks: Chunk[]): number[] => chunks.map((c) => c.offset + c.length);

// ---------------------------------------------------------------------------------------------
// GF(2) polynomial arithmetic on BigInt, independent of src/chunk/rabin.ts.

const degree = (p: bigint): number => (p === 0n ? -1 : p.toString(2).length - 1);

function polyMod(a: bigint, p: bigint): bigint {
  const dp = degree(p);
  for (let d = degree(a); d >= dp; d = degree(a)) a ^= p << BigInt(d - dp);
  return a;
}

function polyMulMod(a: bigint, b: bigint, p: bigint): bigint {
  let r = 0n;
  for (; b !== 0n; b >>= 1n, a <<= 1n) if (b & 1n) r ^= a;
  return polyMod(r, p);
}

function polyGcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, polyMod(a, b)];
  return a;
}

/** x^(2^k) mod p, by k squarings. */
function xPow2k(k: number, p: bigint): bigint {
  let r = polyMod(2n, p);
  for (let i = 0; i < k; i++) r = polyMulMod(r, r, p);
  return r;
}

/**
 * Rabin's irreducibility test: p of degree n is irreducible over GF(2) iff x^(2^n) ≡ x (mod p)
 * and gcd(x^(2^(n/q)) − x, p) = 1 for every prime q dividing n.
 */
function rabinIrreducible(p: bigint): boolean {
  const n = degree(p);
  if (n < 1) return false;
  if (xPow2k(n, p) !== polyMod(2n, p)) return false;
  for (let q = 2; q <= n; q++) {
    let prime = true;
    for (let f = 2; f * f <= q; f++) if (q % f === 0) prime = false;
    if (!prime || n % q !== 0) continue;
    if (polyGcd(p, xPow2k(n / q, p) ^ 2n) !== 1n) return false;
  }
  return true;
}

/** Irreducibility by trial division by every polynomial of degree 1..15 (p of degree ≤ 31). */
function trialDivisionIrreducible(p: number): boolean {
  const dp = 31 - Math.clz32(p);
  for (let d = 2; d < 1 << 16; d++) {
    const dd = 31 - Math.clz32(d);
    if (2 * dd > dp) break; // a factor of degree > dp/2 implies one of degree < dp/2
    let a = p;
    for (let da = dp; da >= dd; da = 31 - Math.clz32(a)) a = (a ^ (d << (da - dd))) >>> 0;
    if (a === 0) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The polynomial and the tables

Deno.test("rabin: the polynomial has degree 31 and is irreducible over GF(2)", () => {
  assert.equal(POLYNOMIAL_DEGREE, 31);
  assert.equal(31 - Math.clz32(POLYNOMIAL), 31);
  assert.ok(rabinIrreducible(BigInt(POLYNOMIAL)), "Rabin's test");
  assert.ok(trialDivisionIrreducible(POLYNOMIAL), "trial division");

  // The checkers themselves: a known irreducible trinomial passes, products fail.
  const trinomial = (1n << 31n) | (1n << 3n) | 1n; // x^31 + x^3 + 1
  assert.ok(rabinIrreducible(trinomial));
  assert.ok(trialDivisionIrreducible(Number(trinomial)));
  const product = polyMulMod(0b111n, (1n << 29n) | (1n << 2n) | 1n, 1n << 40n); // deg 2 · deg 29
  assert.equal(degree(product), 31);
  assert.ok(!rabinIrreducible(product));
  assert.ok(!trialDivisionIrreducible(Number(product)));
  const square = polyMulMod(0x8011n, 0x8011n, 1n << 40n) | 0n; // (x^15+x^4+1)^2, degree 30
  assert.ok(!rabinIrreducible(square));
  assert.ok(!trialDivisionIrreducible(Number(square)));
});

Deno.test("rabin: tables match GF(2) arithmetic", () => {
  const p = BigInt(POLYNOMIAL);
  for (let b = 0; b < 256; b++) {
    const out = polyMod(BigInt(b) << BigInt(8 * WINDOW_SIZE), p);
    assert.equal(OUT_TABLE[b], Number(out), `OUT_TABLE[${b}]`);
    const shifted = BigInt(b) << 31n;
    const mod = BigInt.asIntN(32, (polyMod(shifted, p) ^ shifted) & 0xffffffffn);
    assert.equal(MOD_TABLE[b], Number(mod), `MOD_TABLE[${b}]`);
  }
});

Deno.test("rabin: fingerprints equal the window's polynomial mod P, rolling or not", () => {
  const p = BigInt(POLYNOMIAL);
  const data = seededBytes(7, 4096);
  const rolling = new RollingRabin();
  for (let i = 0; i < data.length; i++) {
    const fp = rolling.roll(data[i]);
    assert.ok(fp >= 0 && fp < 2 ** 31, "a fingerprint is a non-negative int32");
    if (i % 97 !== 0 || i < WINDOW_SIZE) continue;
    const window = data.subarray(i + 1 - WINDOW_SIZE, i + 1);
    const expected = Number(polyMod(BigInt("0x" + toHex(window)), p));
    assert.equal(fp, expected, `position ${i}`);
    assert.equal(fingerprint(window), expected);
  }
  assert.equal(appendByte(0, 0xab), 0xab);
  rolling.reset();
  assert.equal(rolling.digest, 0);
});

// ---------------------------------------------------------------------------------------------
// Golden vectors

interface GoldenVector {
  name: string;
  seed: number;
  size: number;
  options: ChunkerOptions;
  inputSha256: string;
  chunks: Row[];
}

const GOLDEN_SPECS: Omit<GoldenVector, "inputSha256" | "chunks">[] = [
  { name: "default options, 4 MiB", seed: 0x5eed, size: 4 << 20, options: DEFAULT_CHUNKER_OPTIONS },
  { name: "1K/4K/16K, 512 KiB", seed: 0xc0ffee, size: 512 << 10, options: SMALL },
];

/** Recompute the vectors from GOLDEN_SPECS and write them, one chunk per line. */
async function writeGolden(): Promise<void> {
  const vectors = GOLDEN_SPECS.map((spec) => {
    const data = seededBytes(spec.seed, spec.size);
    const chunks = rows(chunkBuffer(data, spec.options));
    return { ...spec, options: { ...spec.options }, inputSha256: toHex(sha256(data)), chunks };
  });
  const generator =
    "xorshift32 (13, 17, 5) from the seed, little-endian: seededBytes in chunk_test.ts";
  const text = JSON.stringify({ generator, vectors }, null, 2)
    .replace(/\[\s+(\d+),\s+(\d+),\s+("[0-9a-f]+")\s+\]/g, "[$1, $2, $3]");
  await Deno.writeTextFile(GOLDEN_URL, text + "\n");
}

async function loadGolden(): Promise<GoldenVector[]> {
  if (Deno.env.get("FILESYNC_UPDATE_GOLDEN") === "1") await writeGolden();
  return JSON.parse(await Deno.readTextFile(GOLDEN_URL)).vectors;
}

Deno.test("golden vectors: committed boundaries, whatever the read sizes", async (t) => {
  const golden = await loadGolden();
  assert.equal(golden.length, GOLDEN_SPECS.length);
  for (const vector of golden) {
    const data = seededBytes(vector.seed, vector.size);
    assert.equal(toHex(sha256(data)), vector.inputSha256, "the generator still makes the input");
    assert.ok(vector.chunks.length >= 40, "enough cuts to mean something");

    await t.step(`${vector.name}: one buffer`, () => {
      assert.deepEqual(rows(chunkBuffer(data, vector.options)), vector.chunks);
    });
    await t.step(`${vector.name}: equals the naive reference chunker`, () => {
      const magic = new ContentChunker(vector.options).magic;
      const cuts = referenceCuts(data, vector.options, magic);
      assert.deepEqual(cuts, vector.chunks.map(([o, l]) => o + l));
    });
    for (const size of [7, 4093, 65537, 1 << 20]) {
      await t.step(`${vector.name}: streamed in ${size}-byte reads`, async () => {
        const chunks = await collect(chunkStream(piecesOf(data, size), vector.options));
        assert.deepEqual(rows(chunks), vector.chunks);
      });
    }
    await t.step(`${vector.name}: push() one byte at a time`, () => {
      const chunker = new ContentChunker(vector.options);
      const lengths: number[] = [];
      for (let i = 0; i < data.length; i++) lengths.push(...chunker.push(data.subarray(i, i + 1)));
      lengths.push(chunker.finish());
      assert.deepEqual(lengths, vector.chunks.map(([, l]) => l));
    });
  }
  // Full chunkStream (with per-chunk SHA-256) one byte at a time, on the smaller vector.
  const small = golden[1];
  const chunks = await collect(
    chunkStream(piecesOf(seededBytes(small.seed, small.size), 1), SMALL),
  );
  assert.deepEqual(rows(chunks), small.chunks);
});

Deno.test("chunkStream accepts a ReadableStream", async () => {
  const data = seededBytes(11, 300_000);
  const stream = ReadableStream.from(piecesOf(data, 10_000));
  const chunks = await collect(chunkStream(stream, SMALL));
  assert.deepEqual(rows(chunks), rows(chunkBuffer(data, SMALL)));
});

// ---------------------------------------------------------------------------------------------
// Chunking rules

Deno.test("cuts follow the rule on edge-case options and content", () => {
  const random = seededBytes(3, 600_000);
  const cases: [string, Uint8Array, ChunkerOptions][] = [
    ["minSize = window", random, { minSize: 64, avgSize: 256, maxSize: 1024 }],
    ["min = avg = max (fixed size)", random, { minSize: 4096, avgSize: 4096, maxSize: 4096 }],
    ["avg = max", random, { minSize: 1000, avgSize: 8192, maxSize: 8192 }],
    ["zeros", new Uint8Array(300_000), SMALL],
    ["a repeating pattern", Uint8Array.from({ length: 300_000 }, (_, i) => i * 7 % 251), SMALL],
  ];
  for (const [name, data, opts] of cases) {
    const magic = new ContentChunker(opts).magic;
    assert.deepEqual(ends(chunkBuffer(data, opts)), referenceCuts(data, opts, magic), name);
  }
  // Runs of zeros make maxSize chunks (the pattern is non-zero, and an all-zero window's
  // fingerprint is 0), not a flood of minSize ones.
  const zeros = chunkBuffer(new Uint8Array(100_000), SMALL);
  assert.ok(zeros.slice(0, -1).every((c) => c.length === SMALL.maxSize));
});

Deno.test("small and empty inputs", async () => {
  assert.deepEqual(chunkBuffer(new Uint8Array(0)), []);
  assert.deepEqual(await collect(chunkStream(piecesOf(new Uint8Array(0), 1))), []);
  const empties = (async function* () {
    yield new Uint8Array(0);
    yield new Uint8Array(0);
  })();
  assert.deepEqual(await collect(chunkStream(empties)), []);

  for (const size of [1, 63, 64, 1000, DEFAULT_CHUNKER_OPTIONS.minSize]) {
    const data = seededBytes(size, size);
    const expected = [[0, size, toHex(sha256(data))]];
    assert.deepEqual(rows(chunkBuffer(data)), expected, `${size} bytes`);
    assert.deepEqual(rows(await collect(chunkStream(piecesOf(data, 5)))), expected);
  }
});

Deno.test("ContentChunker: push, pending, finish and findBoundary ranges", () => {
  const data = seededBytes(5, 200_000);
  const expected = chunkBuffer(data, SMALL).map((c) => c.length);
  const chunker = new ContentChunker(SMALL);
  assert.deepEqual(chunker.options, SMALL);
  assert.equal(chunker.mask, SMALL.avgSize - 1);
  const lengths = [...chunker.push(data.subarray(0, 100_000))];
  assert.equal(chunker.pending, 100_000 - lengths.reduce((a, b) => a + b, 0));
  lengths.push(...chunker.push(data.subarray(100_000)), chunker.finish());
  assert.deepEqual(lengths, expected);
  assert.equal(chunker.pending, 0);

  // findBoundary within a sub-range, as a caller reusing a big buffer would.
  chunker.reset();
  const cuts: number[] = [];
  for (let pos = 1000, cut; (cut = chunker.findBoundary(data, pos, 150_000)) >= 0; pos = cut) {
    cuts.push(cut - 1000);
  }
  assert.deepEqual(cuts, ends(chunkBuffer(data.subarray(1000, 150_000), SMALL)).slice(0, -1));
  chunker.reset();
  assert.throws(() => chunker.findBoundary(data, 10, 5), RangeError);
  assert.throws(() => chunker.findBoundary(data, 0, data.length + 1), RangeError);
  assert.throws(() => chunker.findBoundary(data, -1), RangeError);
});

Deno.test("shift resistance: a one-byte edit in 64 MiB changes at most 3 chunks", () => {
  const opts = DEFAULT_CHUNKER_OPTIONS;
  const data = seededBytes(0xdeadbeef, 64 << 20);
  const base = chunkBuffer(data, opts);
  const baseCounts = new Map<string, number>();
  for (const c of base) baseCounts.set(toHex(c.hash), (baseCounts.get(toHex(c.hash)) ?? 0) + 1);

  const checkBounds = (chunks: Chunk[], total: number, what: string) => {
    let offset = 0;
    chunks.forEach((c, i) => {
      assert.equal(c.offset, offset, what);
      assert.ok(c.length <= opts.maxSize, `${what}: chunk ${i} over maxSize`);
      if (i < chunks.length - 1) assert.ok(c.length >= opts.minSize, `${what}: chunk ${i} short`);
      offset += c.length;
    });
    assert.equal(offset, total, what);
  };
  checkBounds(base, data.length, "original");

  const rand = seededInts(0x1234567);
  const edit = (kind: string, at: number): Uint8Array => {
    if (kind === "change") {
      const out = data.slice();
      out[at] ^= 1 + rand(255);
      return out;
    }
    const out = new Uint8Array(data.length + (kind === "insert" ? 1 : -1));
    out.set(data.subarray(0, at));
    if (kind === "insert") {
      out[at] = rand(256);
      out.set(data.subarray(at), at + 1);
    } else {
      out.set(data.subarray(at + 1), at);
    }
    return out;
  };
  for (const kind of ["insert", "delete", "change"]) {
    for (let trial = 0; trial < 5; trial++) {
      const at = rand(data.length);
      const edited = edit(kind, at);
      const chunks = chunkBuffer(edited, opts);
      const what = `${kind} at ${at}`;
      checkBounds(chunks, edited.length, what);
      const counts = new Map(baseCounts);
      let added = 0;
      for (const c of chunks) {
        const key = toHex(c.hash);
        const left = counts.get(key) ?? 0;
        if (left > 0) counts.set(key, left - 1);
        else added++;
      }
      const removed = [...counts.values()].reduce((a, b) => a + b, 0);
      assert.ok(added <= 3 && removed <= 3, `${what}: ${added} chunks added, ${removed} removed`);
      assert.ok(added >= 1 && removed >= 1, `${what}: the edit must show`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Files

Deno.test("chunkFile equals chunkBuffer and reads in pieces", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chunk_test_" });
  try {
    const data = seededBytes(9, 3 * (1 << 20) + 12_345);
    const path = `${dir}/file.bin`;
    await Deno.writeFile(path, data);
    const expected = rows(chunkBuffer(data));
    assert.deepEqual(rows(await collect(chunkFile(path))), expected);
    assert.deepEqual(rows(await collect(chunkFile(path, {}, 4093))), expected);
    assert.deepEqual(
      rows(await collect(chunkFile(path, SMALL, 100_000))),
      rows(chunkBuffer(data, SMALL)),
    );

    // Abandoning the generator closes the file (the test's resource sanitizer checks).
    for await (const chunk of chunkFile(path)) {
      assert.equal(chunk.offset, 0);
      break;
    }

    const empty = `${dir}/empty`;
    await Deno.writeFile(empty, new Uint8Array(0));
    assert.deepEqual(await collect(chunkFile(empty)), []);

    await assert.rejects(collect(chunkFile(`${dir}/missing`)), Deno.errors.NotFound);
    await assert.rejects(collect(chunkFile(path, {}, 0)), RangeError);
    await assert.rejects(collect(chunkFile(path, { avgSize: 3000 })), RangeError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Options

Deno.test("validateChunkerOptions fills defaults and rejects bad sizes", () => {
  assert.deepEqual(validateChunkerOptions({}), { ...DEFAULT_CHUNKER_OPTIONS });
  assert.deepEqual(validateChunkerOptions({ maxSize: 1 << 20 }), {
    ...DEFAULT_CHUNKER_OPTIONS,
    maxSize: 1 << 20,
  });
  assert.deepEqual(validateChunkerOptions(SMALL), SMALL);

  const bad: [Partial<ChunkerOptions>, RegExp][] = [
    [{ avgSize: 100_000 }, /avgSize \(100000\) must be a power of two/],
    [{ minSize: 100_000 }, /minSize \(100000\) must not exceed avgSize/],
    [{ avgSize: 1 << 19 }, /avgSize \(524288\) must not exceed maxSize/],
    [{ minSize: 32, avgSize: 64, maxSize: 128 }, /minSize \(32\) must be at least the 64-byte/],
    [{ minSize: 1.5 }, /minSize must be a positive integer/],
    [{ maxSize: -1 }, /maxSize must be a positive integer/],
    [{ maxSize: NaN }, /maxSize must be a positive integer/],
    [{ maxSize: MAX_CHUNK_SIZE_LIMIT * 2 }, /maxSize \(2147483648\) must not exceed/],
    [
      { avgSize: MAX_CHUNK_SIZE_LIMIT * 2, maxSize: MAX_CHUNK_SIZE_LIMIT * 2 },
      /maxSize \(2147483648\) must not exceed/,
    ],
  ];
  for (const [opts, message] of bad) {
    assert.throws(
      () => validateChunkerOptions(opts),
      (e) => e instanceof RangeError && message.test(e.message),
      JSON.stringify(opts),
    );
    assert.throws(() => new ContentChunker(opts), RangeError);
    assert.throws(() => chunkBuffer(new Uint8Array(1), opts), RangeError);
  }
  assert.throws(
    () => validateChunkerOptions({ minSize: "1024" as unknown as number }),
    TypeError,
  );
  assert.throws(() => validateChunkerOptions(null as unknown as ChunkerOptions), TypeError);
});
