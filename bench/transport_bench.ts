/**
 * Transport benchmark: object transfer between two processes over QUIC on 127.0.0.1, side by
 * side with raw libp2p QUIC streams (1 and 8) carrying the same number of bytes.
 *
 *   deno task bench:transport [--mib 1024] [--chunk-kib 64] [--streams 8] [--window 16]
 *
 * The parent spawns a second deno process as the server. The server holds no data on disk:
 * object i is one of 64 random 64 KiB blocks with i written into its first 8 bytes (so every
 * object is distinct and hashing is real), and it prints the hashes for the client. The
 * client fetches every object through ObjectFetcher (verifying each SHA-256) and, for the raw
 * figures, asks the server to blast the same byte count down 1 and then 8 plain streams with
 * 1 MiB writes (send/drain). Also reported: a join handshake through an invite.
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { sha256, toHex } from "../src/chunk/hash.ts";
import { waitForDrain } from "../src/net/framed_stream.ts";
import {
  createHost,
  createInvite,
  formatInvite,
  type Host,
  joinCluster,
  ObjectFetcher,
  parseInvite,
  serveJoin,
  serveObjects,
} from "../src/net/mod.ts";

const RAW_PROTOCOL = "/filesync/bench-raw/1";
const BLOCKS = 64;

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    serve: { type: "boolean", default: false },
    mib: { type: "string", default: "1024" },
    "chunk-kib": { type: "string", default: "64" },
    streams: { type: "string", default: "8" },
    window: { type: "string", default: "16" },
    batch: { type: "string", default: "8" },
    "read-kib": { type: "string", default: "256" },
    "skip-raw": { type: "boolean", default: false },
  },
});
const mib = Number(args.mib);
const chunkBytes = Number(args["chunk-kib"]) * 1024;
const objectCount = Math.ceil((mib * 1024 * 1024) / chunkBytes);
const totalBytes = objectCount * chunkBytes;
const quic = { readSize: Number(args["read-kib"]) * 1024 };

/** Object i of the synthetic data set (fresh buffer: the transport may keep a reference). */
function makeObject(blocks: Uint8Array[], i: number): Uint8Array {
  const out = blocks[i % BLOCKS].slice();
  new DataView(out.buffer).setFloat64(0, i);
  return out;
}

async function tempIdentity(name: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `fs-bench-${name}-` });
  return `${dir}/identity.key`;
}

// -------------------------------------------------------------------------------------------
// Server process

async function serve(): Promise<void> {
  const blocks = Array.from({ length: BLOCKS }, () => {
    const b = new Uint8Array(chunkBytes);
    for (let o = 0; o < b.length; o += 65536) crypto.getRandomValues(b.subarray(o, o + 65536));
    return b;
  });
  const index = new Map<string, number>();
  const hashes: string[] = [];
  for (let i = 0; i < objectCount; i++) {
    const h = toHex(sha256(makeObject(blocks, i)));
    index.set(h, i);
    hashes.push(h);
  }
  const host = await createHost({
    identityPath: await tempIdentity("server"),
    listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
    isAllowedPeer: () => true,
    logger: { warn: (m) => console.error(`[server] ${m}`) },
    quic,
  });
  await serveObjects(host, {
    has: (h) => Promise.resolve(index.has(toHex(h))),
    get: (h) => {
      const i = index.get(toHex(h));
      return Promise.resolve(i === undefined ? null : Deno.env.get("NO_SLICE") ? blocks[i % BLOCKS] : makeObject(blocks, i));
    },
  });
  await host.handle(RAW_PROTOCOL, async (stream) => {
    // Request: 8 bytes, the number of bytes to send back.
    let req = new Uint8Array(0);
    for await (const chunk of stream) {
      const c = chunk.subarray();
      const n = new Uint8Array(req.length + c.length);
      n.set(req);
      n.set(c, req.length);
      req = n;
      if (req.length >= 8) break;
    }
    let left = Number(new DataView(req.buffer).getBigUint64(0));
    const block = new Uint8Array(1024 * 1024);
    crypto.getRandomValues(block.subarray(0, 65536));
    while (left > 0) {
      const n = Math.min(left, block.length);
      if (!stream.send(block.subarray(0, n))) await waitForDrain(stream);
      left -= n;
    }
    await stream.close();
  }, { membersOnly: true });
  const invite = createInvite({ clusterId: "bench", addrs: host.addrs(), ttlMs: 3_600_000 });
  await serveJoin(host, {
    clusterId: "bench",
    resolveInvite: () => ({ secret: invite.secret, expiresAt: invite.expiresAt }),
    admit: () => Promise.resolve({ members: [{ peerId: host.peerId, addrs: host.addrs() }] }),
  });
  console.log(JSON.stringify({ peerId: host.peerId, addrs: host.addrs(), invite: formatInvite(invite) }));
  console.log(hashes.join("\n"));
  console.log("END");
  let last = process.cpuUsage(); let lt = performance.now();
  setInterval(() => { const c = process.cpuUsage(last); const w = performance.now() - lt; last = process.cpuUsage(); lt = performance.now(); console.error(`[server cpu] user ${(c.user / 1000 / w * 100).toFixed(0)}% sys ${(c.system / 1000 / w * 100).toFixed(0)}%`); }, 2000);
  // Serve until the parent closes our stdin.
  for await (const _ of Deno.stdin.readable) { /* drain */ }
  await host.stop();
}

// -------------------------------------------------------------------------------------------
// Client (parent) process

async function readLines(stream: ReadableStream<Uint8Array>, until: string): Promise<string[]> {
  const lines: string[] = [];
  let buf = "";
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error("server exited before it was ready");
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line === until) {
        reader.releaseLock();
        return lines;
      }
      lines.push(line);
    }
  }
}

async function rawTransfer(host: Host, server: string, streams: number): Promise<number> {
  const per = Math.floor(totalBytes / streams);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: streams }, async (_, i) => {
    const want = i === streams - 1 ? totalBytes - per * (streams - 1) : per;
    const s = await host.openStream(server, RAW_PROTOCOL);
    const req = new Uint8Array(8);
    new DataView(req.buffer).setBigUint64(0, BigInt(want));
    s.send(req);
    let got = 0;
    for await (const chunk of s) got += chunk.byteLength;
    if (got !== want) throw new Error(`raw stream got ${got} of ${want} bytes`);
    await s.close();
  }));
  return (performance.now() - t0) / 1000;
}

function mibps(bytes: number, seconds: number): string {
  return (bytes / 1024 / 1024 / seconds).toFixed(1);
}

async function client(): Promise<void> {
  const self = new URL(import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      "--allow-net",
      "--allow-ffi",
      self,
      "--serve",
      "--mib",
      String(mib),
      "--chunk-kib",
      String(chunkBytes / 1024),
      "--read-kib",
      String(quic.readSize / 1024),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const lines = await readLines(child.stdout, "END");
    const info = JSON.parse(lines[0]) as { peerId: string; addrs: string[]; invite: string };
    const hashes = lines.slice(1).map((h) => {
      const out = new Uint8Array(32);
      for (let i = 0; i < 32; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
      return out;
    });
    const host = await createHost({
      identityPath: await tempIdentity("client"),
      listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
      isAllowedPeer: () => true,
      quic,
    });
    const tj = performance.now();
    await joinCluster(host, parseInvite(info.invite));
    const joinMs = performance.now() - tj;
    await host.rememberPeer(info.peerId, info.addrs);

    console.log(
      `transfer of ${mib} MiB as ${objectCount} objects of ${chunkBytes / 1024} KiB, ` +
        `two processes on 127.0.0.1 (QUIC, ${quic.readSize / 1024} KiB native reads)`,
    );
    console.log(`join handshake (invite -> accepted): ${joinMs.toFixed(1)} ms`);
    const results: { name: string; seconds: number }[] = [];
    for (const streams of args["skip-raw"] ? [] : [1, 8]) {
      const s = await rawTransfer(host, info.peerId, streams);
      results.push({ name: `raw libp2p QUIC, ${streams} stream${streams > 1 ? "s" : ""}`, seconds: s });
      console.log(`  ${results.at(-1)!.name}: ${mibps(totalBytes, s)} MiB/s`);
    }
    const cpu0 = process.cpuUsage();
    const fetcher = new ObjectFetcher(host);
    let received = 0;
    const t0 = performance.now();
    const r = await fetcher.fetch(hashes, [info.peerId], (_h, bytes) => {
      received += bytes.length;
    }, {
      streamsPerPeer: Number(args.streams),
      window: Number(args.window),
      batch: Number(args.batch),
    });
    const os = (performance.now() - t0) / 1000;
    const cc = process.cpuUsage(cpu0);
    console.log(`[client cpu] user ${(cc.user / 1e4 / os).toFixed(0)}% sys ${(cc.system / 1e4 / os).toFixed(0)}%`);
    if (r.fetched !== objectCount || received !== totalBytes || r.missing.length > 0) {
      throw new Error(`object transfer incomplete: ${JSON.stringify({ ...r, missing: r.missing.length })}`);
    }
    // deno-lint-ignore no-explicit-any
    console.log([...((globalThis as any).__hist ?? new Map())].sort((a, b) => a[0] - b[0]));
    const name = `objects (verified), ${args.streams} streams, window ${args.window}`;
    console.log(`  ${name}: ${mibps(totalBytes, os)} MiB/s`);
    if (results.length > 0) {
      const bestRaw = Math.max(...results.map((x) => totalBytes / x.seconds));
      const obj = totalBytes / os;
      console.log(
        `objects / best raw: ${(100 * obj / bestRaw).toFixed(0)}% ` +
          `(targets: >= 150 MiB/s and >= 80%)`,
      );
    }
    await host.stop();
  } finally {
    await child.stdin.close().catch(() => {});
    const status = await child.status;
    if (!status.success) console.error(`server exited with ${status.code}`);
  }
}

if (args.serve) await serve();
else await client();
