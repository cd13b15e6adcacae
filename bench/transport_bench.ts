/**
 * Transport benchmark: object transfer between two processes over QUIC on 127.0.0.1, side by
 * side with raw libp2p QUIC streams (1 and 8) carrying the same number of bytes, and with the
 * same fetch over a bulk connection (TLS on TCP, src/net/bulk.ts).
 *
 *   deno task bench:transport [--mib 1024] [--rounds 1] [--chunk-kib 64]
 *       [--streams N] [--window-mib N] [--window N] [--batch N]
 *                                                  object fetch tuning (default: library's)
 *       [--read-kib 256]                           native QUIC read size (library: 4)
 *       [--quic-defaults]                          the QUIC library's flow-control defaults
 *       [--skip-raw]
 *
 * The parent spawns a second deno process as the server. The server holds no data on disk:
 * object i is one of 64 random 64 KiB blocks with i written into its first 8 bytes (so every
 * object is distinct and hashing is real), and it prints the hashes for the client. The
 * client fetches every object through ObjectFetcher (verifying each SHA-256) and, for the raw
 * figures, asks the server to blast the same byte count down 1 and then 8 plain streams with
 * 1 MiB writes (send/drain). Also reported: a join handshake through an invite.
 */
import { parseArgs } from "node:util";
import { sha256, toHex } from "../src/chunk/hash.ts";
import { giveBuffer, takeBuffer } from "../src/util/mod.ts";
import {
  BulkDialer,
  BulkServer,
  createHost,
  createInvite,
  type FetchOptions,
  formatInvite,
  type Host,
  joinCluster,
  ObjectFetcher,
  parseInvite,
  QUIC_READ_SIZE,
  type QuicTuning,
  serveJoin,
  serveObjects,
  waitForDrain,
} from "../src/net/mod.ts";

const RAW_PROTOCOL = "/filesync/bench-raw/1";
const BULK_RUN = "objects, verified, over a bulk connection (TLS on TCP)";
const BLOCKS = 64;

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    serve: { type: "boolean", default: false },
    mib: { type: "string", default: "1024" },
    "chunk-kib": { type: "string", default: "64" },
    streams: { type: "string" },
    window: { type: "string" },
    batch: { type: "string" },
    "window-mib": { type: "string" },
    "read-kib": { type: "string", default: String(QUIC_READ_SIZE / 1024) },
    "skip-raw": { type: "boolean", default: false },
    "quic-defaults": { type: "boolean", default: false },
    rounds: { type: "string", default: "1" },
  },
});
const mib = Number(args.mib);
const chunkBytes = Number(args["chunk-kib"]) * 1024;
const objectCount = Math.ceil((mib * 1024 * 1024) / chunkBytes);
const totalBytes = objectCount * chunkBytes;
const rounds = Math.max(1, Number(args.rounds));
/** The library's own flow-control defaults, for comparison with ours (--quic-defaults). */
const LIBRARY_QUIC = {
  maxStreamData: 10_000_000,
  maxConnectionData: 15_000_000,
  receiveBufferSize: 500_000,
  sendBufferSize: 500_000,
};
const readSize = Number(args["read-kib"]) * 1024;
const quic: Partial<QuicTuning> = {
  readSize,
  ...(args["quic-defaults"] ? LIBRARY_QUIC : {}),
};

/** Object i of the synthetic data set (fresh buffer: the transport may keep a reference). */
/**
 * Object i, built into a pooled buffer as the daemon reads chunks through its locator (read
 * into a pooled buffer, given back by the server once sent).
 */
function makeObject(blocks: Uint8Array[], i: number): Uint8Array {
  const block = blocks[i % BLOCKS];
  const out = takeBuffer(block.length);
  out.set(block);
  new DataView(out.buffer, out.byteOffset, out.byteLength).setFloat64(0, i);
  return out;
}

/** A throwaway identity file, removed with its directory when the process exits. */
async function tempIdentity(name: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `fs-bench-${name}-` });
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
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
  const objects = await serveObjects(host, {
    has: (h) => Promise.resolve(index.has(toHex(h))),
    get: (h) => {
      const i = index.get(toHex(h));
      return Promise.resolve(i === undefined ? null : makeObject(blocks, i));
    },
    release: giveBuffer,
  });
  await BulkServer.start(host, "127.0.0.1", objects);
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
  console.log(
    JSON.stringify({ peerId: host.peerId, addrs: host.addrs(), invite: formatInvite(invite) }),
  );
  console.log(hashes.join("\n"));
  console.log("END");
  // Serve until the parent closes our stdin.
  for await (const _ of Deno.stdin.readable) { /* drain */ }
  await host.stop();
  // libp2p leaves AbortSignal.timeout signals with listeners behind (stream negotiation, 10 s),
  // and in Deno those keep the event loop alive; nothing is left to do, so exit now.
  Deno.exit(0);
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

function mibps(bytes: number, seconds: number): number {
  return bytes / 1024 / 1024 / seconds;
}

/** "raw x1", "raw x8", "objects": for the per-round lines. */
function short(name: string): string {
  const m = /^raw .*, (\d+) stream/.exec(name);
  return m !== null ? `raw x${m[1]}` : name === BULK_RUN ? "bulk" : "objects";
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
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
      String(readSize / 1024),
      ...(args["quic-defaults"] ? ["--quic-defaults"] : []),
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

    const fetchOpts: FetchOptions = {
      streamsPerPeer: args.streams === undefined ? undefined : Number(args.streams),
      window: args.window === undefined ? undefined : Number(args.window),
      batch: args.batch === undefined ? undefined : Number(args.batch),
      windowBytes: args["window-mib"] === undefined
        ? undefined
        : Number(args["window-mib"]) * 1024 * 1024,
    };
    const objectsName = `objects, verified (${args.streams ?? "default"} streams per peer, ` +
      `window ${args["window-mib"] ?? "default"} MiB)`;
    console.log(
      `${mib} MiB as ${objectCount} objects of ${chunkBytes / 1024} KiB, two processes on ` +
        `127.0.0.1, QUIC (${args["quic-defaults"] ? "library" : "FileSync"} flow control, ` +
        `${readSize / 1024} KiB native reads), ${rounds} round(s)`,
    );
    console.log(`join handshake (invite -> accepted): ${joinMs.toFixed(1)} ms`);

    const fetchAll = (fetcher: ObjectFetcher) => async () => {
      let received = 0;
      const t0 = performance.now();
      const r = await fetcher.fetch(hashes, [info.peerId], (_h, bytes) => {
        received += bytes.length;
      }, fetchOpts);
      const seconds = (performance.now() - t0) / 1000;
      if (r.fetched !== objectCount || received !== totalBytes || r.missing.length > 0) {
        throw new Error(`object transfer incomplete: ${r.fetched}/${objectCount} objects`);
      }
      return seconds;
    };
    const runs: Record<string, () => Promise<number>> = {
      "raw libp2p QUIC, 1 stream": () => rawTransfer(host, info.peerId, 1),
      "raw libp2p QUIC, 8 streams": () => rawTransfer(host, info.peerId, 8),
      [objectsName]: fetchAll(new ObjectFetcher(host)),
      [BULK_RUN]: fetchAll(new ObjectFetcher(host, { bulk: new BulkDialer(host) })),
    };
    const names = Object.keys(runs).filter((n) => !(args["skip-raw"] && n.startsWith("raw")));
    const figures = new Map<string, number[]>(names.map((n) => [n, []]));
    for (let round = 0; round < rounds; round++) {
      // Rotate the order each round so background load does not always hit the same run.
      const order = names.map((_, i) => names[(i + round) % names.length]);
      const line: string[] = [];
      for (const name of order) {
        const v = mibps(totalBytes, await runs[name]());
        figures.get(name)!.push(v);
        line.push(`${short(name)} ${v.toFixed(0)}`);
      }
      if (rounds > 1) console.log(`  round ${round + 1}: ${line.join(", ")} MiB/s`);
    }
    for (const name of names) {
      const xs = figures.get(name)!;
      console.log(`  ${name}: ${median(xs).toFixed(1)} MiB/s${rounds > 1 ? " (median)" : ""}`);
    }
    if (!args["skip-raw"]) {
      const obj = median(figures.get(objectsName)!);
      const multi = median(figures.get("raw libp2p QUIC, 8 streams")!);
      const single = median(figures.get("raw libp2p QUIC, 1 stream")!);
      console.log(
        `objects: ${obj.toFixed(1)} MiB/s = ${
          (100 * obj / multi).toFixed(0)
        }% of raw multi-stream ` +
          `(8), ${(100 * obj / Math.max(multi, single)).toFixed(0)}% of the best raw figure ` +
          `(targets: >= 150 MiB/s and >= 80% of raw multi-stream)`,
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
