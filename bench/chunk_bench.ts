/**
 * Chunking throughput on random bytes in memory, side by side in one run:
 *   (a) our Rabin boundary finding alone (ContentChunker.findBoundary),
 *   (b) our full streaming chunker with SHA-256 per chunk (chunkStream),
 *   (c) rabin-wasm, IPFS's Rabin chunker (AssemblyScript compiled to WebAssembly),
 *   (d) plain SHA-256 over the whole buffer through node:crypto,
 *   (e) re-chunking the buffer after a 4 KiB overwrite, and (f) after a one-byte insert, guided
 *       by the original's chunk list (rechunkStream, as the scanner re-reads an edited file);
 *       the result is checked equal to a full chunking once before timing.
 * (a), (b), (c), (e) and (f) consume the buffer in 1 MiB reads, as chunking a file does.
 *
 * Usage: deno task bench:chunk [--mib N] [--runs N]
 * Prints a table and one JSON line (`{"bench":"chunk",...}`) for scripts.
 */
import { createHash, randomFillSync } from "node:crypto";
// rabin-wasm is CommonJS without type declarations for its entry point.
import { create as createRabinWasm } from "rabin-wasm";
import {
  type Chunk,
  chunkBuffer,
  chunkStream,
  ContentChunker,
  DEFAULT_CHUNKER_OPTIONS,
  rechunkStream,
} from "../src/chunk/mod.ts";
import { sequentialReader } from "../tests/helpers/bytes.ts";

/** Read size for the streaming contenders. */
const READ_SIZE = 1 << 20;
/** Our goal: boundary finding at least this many times rabin-wasm's speed. */
const TARGET_RATIO = 2.5;

interface Args {
  mib: number;
  runs: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { mib: 256, runs: 3 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag !== "--mib" && flag !== "--runs") {
      throw new Error(`unknown argument ${flag}; usage: chunk_bench.ts [--mib N] [--runs N]`);
    }
    const value = Number(argv[++i]);
    if (!Number.isInteger(value) || value < 1) {
      throw new Error(`${flag} needs a positive integer, got ${argv[i]}`);
    }
    args[flag === "--mib" ? "mib" : "runs"] = value;
  }
  return args;
}

/** The rabin-wasm object `create()` returns (see node_modules/rabin-wasm/src/rabin.js). */
interface RabinWasm {
  fingerprint(buf: Uint8Array): Int32Array;
}

/**
 * rabin-wasm with settings comparable to ours: create(bits, min, max, window). bits = 16 gives
 * the same boundary mask as avgSize 64 KiB. The polynomial cannot be chosen: the WebAssembly
 * module hard-codes 0x3DA3358B4DC173 (degree 53) and ignores the wrapper's fifth argument.
 * Unlike ours it rolls every byte, including those before minSize.
 */
async function makeRabinWasm(): Promise<RabinWasm> {
  const { minSize, avgSize, maxSize } = DEFAULT_CHUNKER_OPTIONS;
  return await createRabinWasm(Math.log2(avgSize), minSize, maxSize, 64) as RabinWasm;
}

function* reads(data: Uint8Array): Generator<Uint8Array> {
  for (let i = 0; i < data.length; i += READ_SIZE) yield data.subarray(i, i + READ_SIZE);
}

/** One contender: consumes the whole buffer and returns how many chunks it made. */
type Contender = { name: string; run: (data: Uint8Array) => Promise<number> | number };

/** The buffer edited as the sync benchmark edits its large file, and its original chunks. */
interface Edits {
  previous: Chunk[];
  overwritten: Uint8Array;
  inserted: Uint8Array;
}

function makeEdits(data: Uint8Array): Edits {
  const overwritten = data.slice();
  randomFillSync(
    overwritten.subarray(Math.floor(data.length / 3), Math.floor(data.length / 3) + 4096),
  );
  const mid = Math.floor(data.length / 2) + 12345;
  const inserted = new Uint8Array(data.length + 1);
  inserted.set(data.subarray(0, mid));
  inserted[mid] = 0x42;
  inserted.set(data.subarray(mid), mid + 1);
  return { previous: chunkBuffer(data), overwritten, inserted };
}

async function rechunkCount(data: Uint8Array, previous: Chunk[]): Promise<number> {
  let chunks = 0;
  for await (const _ of rechunkStream(sequentialReader(data, READ_SIZE), previous)) chunks++;
  return chunks;
}

function contenders(wasm: RabinWasm, edits: Edits): Contender[] {
  return [
    {
      name: "rabin (ours, boundaries only)",
      run: (data) => {
        const chunker = new ContentChunker();
        let chunks = 0;
        for (const piece of reads(data)) {
          for (let pos = 0, cut; (cut = chunker.findBoundary(piece, pos)) >= 0; pos = cut) chunks++;
        }
        return chunks + (chunker.finish() > 0 ? 1 : 0);
      },
    },
    {
      name: "chunker + SHA-256 (ours)",
      run: async (data) => {
        let chunks = 0;
        for await (
          const _ of chunkStream((async function* () {
            yield* reads(data);
          })())
        ) chunks++;
        return chunks;
      },
    },
    {
      name: "rabin-wasm",
      run: (data) => {
        let chunks = 0;
        let cutBytes = 0;
        for (const piece of reads(data)) {
          const lengths = wasm.fingerprint(piece);
          chunks += lengths.length;
          for (const length of lengths) cutBytes += length;
        }
        return chunks + (cutBytes < data.length ? 1 : 0);
      },
    },
    {
      name: "SHA-256 (node:crypto)",
      run: (data) => {
        createHash("sha256").update(data).digest();
        return 0;
      },
    },
    {
      name: "re-chunk after 4 KiB overwrite (guided)",
      run: () => rechunkCount(edits.overwritten, edits.previous),
    },
    {
      name: "re-chunk after 1-byte insert (guided)",
      run: () => rechunkCount(edits.inserted, edits.previous),
    },
  ];
}

/** Guided re-chunking must give exactly the full chunking's chunks. */
async function checkGuided(edits: Edits): Promise<void> {
  for (const edited of [edits.overwritten, edits.inserted]) {
    const guided: Chunk[] = [];
    for await (const c of rechunkStream(sequentialReader(edited, READ_SIZE), edits.previous)) {
      guided.push(c);
    }
    const full = chunkBuffer(edited);
    const same = guided.length === full.length &&
      guided.every((c, i) =>
        c.offset === full[i].offset && c.length === full[i].length &&
        c.hash.every((b, j) => b === full[i].hash[j])
      );
    if (!same) throw new Error("guided re-chunking differs from a full chunking");
  }
}

interface Result {
  name: string;
  mbps: number;
  chunks: number;
}

async function main(): Promise<void> {
  let args: Args;
  try {
    args = parseArgs(Deno.args);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(2);
  }
  const size = args.mib << 20;
  const data = new Uint8Array(size);
  randomFillSync(data);
  const edits = makeEdits(data);
  await checkGuided(edits);
  const list = contenders(await makeRabinWasm(), edits);

  // Warm up every contender on a slice, three times: V8 needs a few tens of MB before the hot
  // loops reach their final optimized code, and a cold first run would understate them.
  const warm = data.subarray(0, Math.min(size, 16 << 20));
  for (let w = 0; w < 3; w++) for (const c of list) await c.run(warm);

  // Best of `runs`, interleaved so that noise from other processes hits every contender alike.
  const results: Result[] = list.map((c) => ({ name: c.name, mbps: 0, chunks: 0 }));
  for (let r = 0; r < args.runs; r++) {
    for (let k = 0; k < list.length; k++) {
      const start = performance.now();
      const chunks = await list[k].run(data);
      const seconds = (performance.now() - start) / 1000;
      results[k].mbps = Math.max(results[k].mbps, size / 1e6 / seconds);
      results[k].chunks = chunks;
    }
  }

  const wasm = results[2].mbps;
  console.log(
    `chunking ${args.mib} MiB of random bytes in memory, best of ${args.runs}, ` +
      `Deno ${Deno.version.deno} (MB = 10^6 bytes)`,
  );
  const header = ["", "MB/s", "chunks", "vs rabin-wasm"];
  const rows = results.map((r) => [
    r.name,
    r.mbps.toFixed(0),
    r.chunks > 0 ? String(r.chunks) : "-",
    `${(r.mbps / wasm).toFixed(2)}x`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  for (const row of [header, ...rows]) {
    console.log(
      row.map((cell, i) => i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))
        .join("  "),
    );
  }
  const ratio = results[0].mbps / wasm;
  console.log(
    `rabin vs rabin-wasm: ${ratio.toFixed(2)}x (target ${TARGET_RATIO}x: ` +
      `${ratio >= TARGET_RATIO ? "met" : "NOT met"})`,
  );
  const keys = [
    "rabin",
    "chunkerSha256",
    "rabinWasm",
    "sha256",
    "rechunkOverwrite",
    "rechunkInsert",
  ];
  console.log(JSON.stringify({
    bench: "chunk",
    mib: args.mib,
    runs: args.runs,
    deno: Deno.version.deno,
    results: Object.fromEntries(results.map((r, i) => [keys[i], {
      mbps: Math.round(r.mbps),
      chunks: r.chunks,
    }])),
    rabinVsWasm: Number(ratio.toFixed(2)),
    targetRatio: TARGET_RATIO,
    targetMet: ratio >= TARGET_RATIO,
  }));
}

if (import.meta.main) await main();
