/**
 * `filesync scan` on a generated tree: 10,000 small files (1-64 KiB) plus one large file
 * (1 GiB by default), from the page cache. Prints, side by side in one run:
 *   - first scan of the whole tree: MB/s, files/s, peak RSS
 *   - rescan with nothing changed: time, bytes read
 *   - first scan of the large file alone (its own directory): MB/s, peak RSS
 *   - baseline: plain SHA-256 of the same bytes (node:crypto, one thread)
 *   - disk used by .filesync/ as a share of the tree
 *
 * Usage: deno task bench:scan [--small 10000] [--large-mib 1024] [--work DIR] [--keep]
 */
import { createHash } from "node:crypto";
import { directoryBytes } from "../src/store/mod.ts";

const args = new Map<string, string>();
for (let i = 0; i < Deno.args.length; i++) {
  const a = Deno.args[i];
  if (a === "--keep") args.set("keep", "1");
  else if (a.startsWith("--")) args.set(a.slice(2), Deno.args[++i]);
}
const SMALL = Number(args.get("small") ?? 10_000);
const LARGE_MIB = Number(args.get("large-mib") ?? 1024);
const WORK = args.get("work") ?? (await Deno.makeTempDir({ prefix: "filesync-scan-bench-" }));
const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Deterministic pseudo-random bytes (xorshift32), fast enough for a GiB. */
function fill(buf: Uint8Array, seed: number): void {
  const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength >>> 2);
  let x = seed | 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
}

async function generate(): Promise<{ tree: string; bigDir: string; bytes: number }> {
  const tree = `${WORK}/tree`;
  const bigDir = `${WORK}/big-only`;
  await Deno.mkdir(`${tree}/small`, { recursive: true });
  await Deno.mkdir(bigDir, { recursive: true });
  let bytes = 0;
  const buf = new Uint8Array(64 * 1024);
  for (let i = 0; i < SMALL; i++) {
    const size = 1024 + ((i * 7919) % (63 * 1024));
    fill(buf, i + 1);
    const dir = `${tree}/small/d${String(i % 100).padStart(2, "0")}`;
    if (i < 100) await Deno.mkdir(dir, { recursive: true });
    await Deno.writeFile(`${dir}/f${i}.bin`, buf.subarray(0, size));
    bytes += size;
  }
  const big = await Deno.open(`${tree}/large.bin`, { write: true, create: true, truncate: true });
  const block = new Uint8Array(1 << 20);
  for (let i = 0; i < LARGE_MIB; i++) {
    fill(block, 1_000_003 + i);
    await big.write(block);
  }
  big.close();
  bytes += LARGE_MIB * 1024 * 1024;
  await Deno.link(`${tree}/large.bin`, `${bigDir}/large.bin`);
  return { tree, bigDir, bytes };
}

/** Read every file once so scans run from the page cache, and time a plain SHA-256 of it. */
async function sha256Baseline(dir: string): Promise<{ seconds: number; bytes: number }> {
  let bytes = 0;
  const t0 = performance.now();
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory && e.name !== ".filesync") await walk(p);
      else if (e.isFile) {
        const h = createHash("sha256");
        const f = await Deno.open(p);
        for await (const piece of f.readable) {
          h.update(piece);
          bytes += piece.byteLength;
        }
        h.digest();
      }
    }
  };
  await walk(dir);
  return { seconds: (performance.now() - t0) / 1000, bytes };
}

interface ScanRun {
  seconds: number;
  peakRssMiB: number;
  json: { files: number; bytes: number; hashedFiles: number; hashedBytes: number; root: string };
}

/** Run `filesync scan --json` as a child process, sampling its peak RSS (VmHWM). */
async function scan(dir: string): Promise<ScanRun> {
  const t0 = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-kv", "-A", MAIN, "scan", dir, "--json"],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let peakKiB = 0;
  const sampler = setInterval(() => {
    try {
      const status = Deno.readTextFileSync(`/proc/${child.pid}/status`);
      const m = /VmHWM:\s+(\d+) kB/.exec(status);
      if (m) peakKiB = Math.max(peakKiB, Number(m[1]));
    } catch { /* exited */ }
  }, 20);
  const out = await child.output();
  clearInterval(sampler);
  const seconds = (performance.now() - t0) / 1000;
  if (out.code !== 0) throw new Error(`scan of ${dir} exited ${out.code}`);
  return {
    seconds,
    peakRssMiB: peakKiB / 1024,
    json: JSON.parse(new TextDecoder().decode(out.stdout)),
  };
}

const MB = 1e6;
console.log(`generating ${SMALL} small files + ${LARGE_MIB} MiB file in ${WORK} ...`);
const { tree, bigDir, bytes } = await generate();
const baseline = await sha256Baseline(tree);
const first = await scan(tree);
const rescan = await scan(tree);
const bigOnly = await scan(bigDir);
const dataBytes = await directoryBytes(`${tree}/.filesync`);

const rows = [
  ["case", "time", "throughput", "files/s", "peak RSS"],
  [
    "sha256 of every file (baseline, 1 thread)",
    `${baseline.seconds.toFixed(2)} s`,
    `${(baseline.bytes / MB / baseline.seconds).toFixed(0)} MB/s`,
    `${((SMALL + 1) / baseline.seconds).toFixed(0)}`,
    "-",
  ],
  [
    "filesync scan, first (whole tree)",
    `${first.seconds.toFixed(2)} s`,
    `${(bytes / MB / first.seconds).toFixed(0)} MB/s`,
    `${(first.json.files / first.seconds).toFixed(0)}`,
    `${first.peakRssMiB.toFixed(0)} MiB`,
  ],
  [
    "filesync scan, rescan unchanged",
    `${rescan.seconds.toFixed(2)} s`,
    `read ${rescan.json.hashedBytes} B`,
    `${(rescan.json.files / rescan.seconds).toFixed(0)}`,
    `${rescan.peakRssMiB.toFixed(0)} MiB`,
  ],
  [
    `filesync scan, ${LARGE_MIB} MiB file alone`,
    `${bigOnly.seconds.toFixed(2)} s`,
    `${((LARGE_MIB * 1024 * 1024) / MB / bigOnly.seconds).toFixed(0)} MB/s`,
    "-",
    `${bigOnly.peakRssMiB.toFixed(0)} MiB`,
  ],
];
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(widths[c])).join("  "));
console.log(
  `.filesync/ after the scans: ${(dataBytes / 1024 / 1024).toFixed(1)} MiB = ` +
    `${(100 * dataBytes / bytes).toFixed(2)}% of the tree (${
      (bytes / 1024 / 1024).toFixed(0)
    } MiB)`,
);
console.log(JSON.stringify({
  small: SMALL,
  largeMiB: LARGE_MIB,
  treeBytes: bytes,
  baselineMBps: baseline.bytes / MB / baseline.seconds,
  firstScanSeconds: first.seconds,
  firstScanMBps: bytes / MB / first.seconds,
  firstScanFilesPerSecond: first.json.files / first.seconds,
  firstScanPeakRssMiB: first.peakRssMiB,
  rescanSeconds: rescan.seconds,
  rescanHashedBytes: rescan.json.hashedBytes,
  largeAloneMBps: (LARGE_MIB * 1024 * 1024) / MB / bigOnly.seconds,
  largeAlonePeakRssMiB: bigOnly.peakRssMiB,
  dataDirBytes: dataBytes,
  dataDirShare: dataBytes / bytes,
}));
if (!args.has("keep") && !args.has("work")) await Deno.remove(WORK, { recursive: true });
