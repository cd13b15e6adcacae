/**
 * Raft benchmarks (`deno task bench:raft`):
 *  1. the pure core, in memory: committed proposals per second in a 3-node cluster;
 *  2. three RaftNodes in one process over the in-memory transport, each persisting to its own
 *     Deno KV file on disk: committed ops/s and commit latency with 1 and 64 concurrent
 *     proposers (200-byte values), and linearizable read latency;
 *  3. side by side, etcd (Debian's etcd-server, 3 members on 127.0.0.1, fsync on) under the same
 *     load through its HTTP/JSON gateway, and the ratio. Skipped with a hint if etcd is absent.
 *
 * Options: --seconds N (per phase, default 3), --no-etcd.
 */
import {
  bootstrapState,
  type Entry,
  InMemoryNetwork,
  KvRaftStorage,
  MemoryStorage,
  RaftCore,
  RaftNode,
  RaftRole,
  type StateMachine,
} from "../src/raft/mod.ts";

const args = Deno.args;
const SECONDS = Number(args[args.indexOf("--seconds") + 1]) || 3;
const WITH_ETCD = !args.includes("--no-etcd");
const VALUE = new Uint8Array(200).fill(0x61);

interface LoadResult {
  ops: number;
  seconds: number;
  p50: number;
  p99: number;
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

/** Run `workers` concurrent loops of `op` for SECONDS; latency in ms per op. */
async function load(workers: number, op: (w: number) => Promise<unknown>): Promise<LoadResult> {
  const lat: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: workers }, async (_, w) => {
    while (performance.now() < end) {
      const s = performance.now();
      await op(w);
      lat.push(performance.now() - s);
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  return { ops: lat.length, seconds, p50: percentile(lat, 0.5), p99: percentile(lat, 0.99) };
}

const fmt = (r: LoadResult) =>
  `${Math.round(r.ops / r.seconds).toLocaleString("en")} ops/s, p50 ${r.p50.toFixed(2)} ms, ` +
  `p99 ${r.p99.toFixed(2)} ms (${r.ops} ops)`;

// ---- 1. pure core -----------------------------------------------------------------------------

function benchCore(batch: number): number {
  const ids = ["a", "b", "c"];
  let seed = 7;
  const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  const cores = new Map(ids.map((id) => [id, new RaftCore({ id, random }, bootstrapState(ids))]));
  const stores = new Map(ids.map((id) => [id, new MemoryStorage(bootstrapState(ids))]));
  let committed = 0;
  const pump = () => {
    for (let round = 0; round < 100; round++) {
      let work = false;
      for (const [id, c] of cores) {
        while (c.hasReady()) {
          work = true;
          const rd = c.ready();
          stores.get(id)!.saveSync(rd);
          if (id === "a") committed += rd.committed.length;
          for (const m of rd.messages) cores.get(m.to)!.step(m);
          c.advance(rd);
        }
      }
      if (!work) return;
    }
  };
  cores.get("a")!.campaign();
  pump();
  const leader = cores.get("a")!;
  if (leader.role !== RaftRole.Leader) throw new Error("bench: no leader");
  let compactAt = 0;
  const start = committed;
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  const datas = Array.from({ length: batch }, () => VALUE);
  while (performance.now() < end) {
    for (let k = 0; k < 50; k++) leader.propose(datas);
    pump();
    // Keep memory flat: compact every node's log behind its applied index.
    if (committed - compactAt > 50_000) {
      compactAt = committed;
      for (const [id, c] of cores) {
        const comp = c.compact(c.status().applied, new Uint8Array(0), 1000);
        stores.get(id)!.compactSync(comp);
      }
    }
  }
  return (committed - start) / ((performance.now() - t0) / 1000);
}

// ---- 2. nodes on Deno KV ------------------------------------------------------------------

class NullMachine implements StateMachine {
  applied = 0;
  apply(_e: Entry): number {
    return ++this.applied;
  }
  snapshot(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(8));
  }
  restore(): Promise<void> {
    return Promise.resolve();
  }
}

async function benchNodes(): Promise<{ seq: LoadResult; c64: LoadResult; read: LoadResult }> {
  const dir = await Deno.makeTempDir({ prefix: "raft-bench-" });
  const ids = ["a", "b", "c"];
  const net = new InMemoryNetwork();
  const kvs = await Promise.all(ids.map((id) => Deno.openKv(`${dir}/${id}.sqlite`)));
  const nodes = await Promise.all(ids.map((id, i) =>
    RaftNode.start({
      id,
      storage: new KvRaftStorage(kvs[i], ["raft"]),
      transport: net.transport(id),
      stateMachine: new NullMachine(),
      bootstrap: ids,
      tickMs: 50,
      requestTimeoutMs: 30_000,
      snapshotEvery: 20_000,
      keepEntries: 2_000,
    })
  ));
  try {
    nodes[0].campaign();
    for (let i = 0; i < 200 && !nodes[0].isLeader(); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const leader = nodes.find((n) => n.isLeader());
    if (!leader) throw new Error("bench: no leader");
    await leader.propose(VALUE); // warm up
    const seq = await load(1, () => leader.propose(VALUE));
    const c64 = await load(64, () => leader.propose(VALUE));
    const read = await load(1, () => leader.readBarrier());
    return { seq, c64, read };
  } finally {
    for (const n of nodes) await n.stop();
    for (const kv of kvs) kv.close();
    await Deno.remove(dir, { recursive: true });
  }
}

// ---- 3. etcd ----------------------------------------------------------------------------------

async function findEtcd(): Promise<string | null> {
  for (const p of ["/usr/bin/etcd", "/usr/local/bin/etcd"]) {
    try {
      await Deno.stat(p);
      return p;
    } catch {
      // not there
    }
  }
  return null;
}

async function benchEtcd(
  bin: string,
): Promise<{ seq: LoadResult; c64: LoadResult; read: LoadResult }> {
  const dir = await Deno.makeTempDir({ prefix: "etcd-bench-" });
  const base = 23790 + Math.floor(Math.random() * 100) * 3;
  const names = ["e0", "e1", "e2"];
  const peer = (i: number) => `http://127.0.0.1:${base + 1000 + i}`;
  const client = (i: number) => `http://127.0.0.1:${base + i}`;
  const cluster = names.map((n, i) => `${n}=${peer(i)}`).join(",");
  const procs = names.map((name, i) =>
    new Deno.Command(bin, {
      args: [
        `--name=${name}`,
        `--data-dir=${dir}/${name}`,
        `--listen-client-urls=${client(i)}`,
        `--advertise-client-urls=${client(i)}`,
        `--listen-peer-urls=${peer(i)}`,
        `--initial-advertise-peer-urls=${peer(i)}`,
        `--initial-cluster=${cluster}`,
        "--initial-cluster-state=new",
        "--initial-cluster-token=raft-bench",
        "--log-level=error",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn()
  );
  const b64 = (s: string | Uint8Array) =>
    btoa(typeof s === "string" ? s : String.fromCharCode(...s));
  const post = async (path: string, body: unknown) => {
    const r = await fetch(`${client(0)}${path}`, { method: "POST", body: JSON.stringify(body) });
    const j = await r.json();
    if (!r.ok) throw new Error(`etcd ${path}: ${JSON.stringify(j)}`);
    return j;
  };
  try {
    let up = false;
    for (let i = 0; i < 300 && !up; i++) {
      try {
        await post("/v3/kv/put", { key: b64("warmup"), value: b64("x") });
        up = true;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    if (!up) throw new Error("etcd did not come up");
    const value = b64(VALUE);
    let n = 0;
    const seq = await load(1, () => post("/v3/kv/put", { key: b64(`k${n++ % 1000}`), value }));
    const c64 = await load(64, () => post("/v3/kv/put", { key: b64(`k${n++ % 1000}`), value }));
    const read = await load(1, () => post("/v3/kv/range", { key: b64("k1") }));
    return { seq, c64, read };
  } finally {
    for (const p of procs) {
      try {
        Deno.kill(p.pid, "SIGKILL");
      } catch {
        // already gone
      }
      await p.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
}

// ---- main -------------------------------------------------------------------------------------

console.log(`raft bench (${SECONDS} s per phase, 200-byte values)`);
console.log(
  `pure core, 3 nodes in memory, 1 entry per proposal:   ${
    Math.round(benchCore(1)).toLocaleString("en")
  } committed/s`,
);
console.log(
  `pure core, 3 nodes in memory, 64 entries per proposal: ${
    Math.round(benchCore(64)).toLocaleString("en")
  } committed/s`,
);
const ours = await benchNodes();
console.log(`3 RaftNodes on Deno KV (disk), in-memory transport:`);
console.log(`  1 proposer:   ${fmt(ours.seq)}`);
console.log(`  64 proposers: ${fmt(ours.c64)}`);
console.log(`  linearizable read (ReadIndex): ${fmt(ours.read)}`);
const bin = WITH_ETCD ? await findEtcd() : null;
if (!bin) {
  console.log(
    WITH_ETCD
      ? "etcd: not installed; for the side-by-side run: apt-get update && apt-get install -y etcd-server"
      : "etcd: skipped (--no-etcd)",
  );
} else {
  const etcd = await benchEtcd(bin);
  console.log(`etcd (${bin}, 3 members on 127.0.0.1, HTTP/JSON gateway):`);
  console.log(`  1 client:   ${fmt(etcd.seq)}`);
  console.log(`  64 clients: ${fmt(etcd.c64)}`);
  console.log(`  linearizable range: ${fmt(etcd.read)}`);
  const r = (a: LoadResult, b: LoadResult) =>
    ((a.ops / a.seconds) / (b.ops / b.seconds)).toFixed(2);
  console.log(
    `ratio ours/etcd: 1 proposer ${r(ours.seq, etcd.seq)}x ops/s (p50 ${
      ours.seq.p50.toFixed(2)
    } vs ${etcd.seq.p50.toFixed(2)} ms); ` +
      `64 proposers ${r(ours.c64, etcd.c64)}x ops/s; read p50 ${ours.read.p50.toFixed(2)} vs ${
        etcd.read.p50.toFixed(2)
      } ms`,
  );
}
