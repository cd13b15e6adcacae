/**
 * The network layer across processes on 127.0.0.1: this file, run with `--net-peer-server`,
 * is a peer process serving join and objects (optionally corrupting every object). The test
 * process fetches objects from a corrupt and a good peer (every object verified, the corrupt
 * peer rejected), shows that a non-member can open neither the raft nor the objects protocol,
 * that a wrong secret is refused, and that the right secret admits a node which can then fetch.
 */
import assert from "node:assert/strict";
import { sha256, toHex } from "../../src/chunk/hash.ts";
import {
  createHost,
  createInvite,
  formatInvite,
  type Host,
  joinCluster,
  JoinError,
  memoryLogger,
  ObjectFetcher,
  openMessageChannel,
  parseInvite,
  serveJoin,
  serveObjects,
} from "../../src/net/mod.ts";
import { refused } from "../helpers/net.ts";

const SERVER_FLAG = "--net-peer-server";
const OBJECTS = 200;

/** Object i: deterministic bytes of a deterministic size, the same in every process. */
function objectData(i: number): Uint8Array {
  const out = new Uint8Array(1000 + ((i * 7919) % 60_000));
  let s = (i + 1) * 2654435761 >>> 0;
  for (let k = 0; k < out.length; k++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[k] = s & 0xff;
  }
  return out;
}

interface ServerConfig {
  dir: string;
  allow: string[];
  corrupt: boolean;
  invite: { clusterId: string; inviteId: string; secretHex: string };
}

/** The peer process: serves join and objects until its stdin closes. */
async function runServer(config: ServerConfig): Promise<void> {
  const allowed = new Set(config.allow);
  const host = await createHost({
    identityPath: `${config.dir}/identity.key`,
    listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
    isAllowedPeer: (p) => allowed.has(p),
    logger: memoryLogger(),
  });
  allowed.add(host.peerId);
  const byHash = new Map<string, number>();
  for (let i = 0; i < OBJECTS; i++) byHash.set(toHex(sha256(objectData(i))), i);
  await serveObjects(host, {
    has: (h) => Promise.resolve(byHash.has(toHex(h))),
    get: (h) => {
      const i = byHash.get(toHex(h));
      if (i === undefined) return Promise.resolve(null);
      const data = objectData(i);
      if (config.corrupt) data[data.length >> 1] ^= 0x55;
      return Promise.resolve(data);
    },
  });
  const secret = Uint8Array.from(config.invite.secretHex.match(/../g)!.map((b) => parseInt(b, 16)));
  await serveJoin(host, {
    clusterId: config.invite.clusterId,
    resolveInvite: (id) => id === config.invite.inviteId ? { secret, expiresAt: null } : null,
    admit: ({ peerId }) => {
      allowed.add(peerId);
      return Promise.resolve({ members: [{ peerId: host.peerId, addrs: host.addrs() }] });
    },
  });
  await openMessageChannel(host, () => {});
  console.log(JSON.stringify({ peerId: host.peerId, addrs: host.addrs() }));
  for await (const _ of Deno.stdin.readable) { /* serve until the test closes our stdin */ }
  await host.stop();
  // libp2p leaves AbortSignal.timeout signals with listeners behind (stream negotiation, 10 s),
  // and in Deno those keep the event loop alive; nothing is left to do, so exit now.
  Deno.exit(0);
}

/** A running peer process. */
class PeerProcess {
  private constructor(
    readonly child: Deno.ChildProcess,
    readonly peerId: string,
    readonly addrs: string[],
  ) {}

  static async start(config: ServerConfig): Promise<PeerProcess> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, SERVER_FLAG, JSON.stringify(config)],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("peer process exited before it was ready");
      text += value;
    }
    reader.releaseLock();
    child.stdout.cancel().catch(() => {});
    const { peerId, addrs } = JSON.parse(text.slice(0, text.indexOf("\n")));
    return new PeerProcess(child, peerId, addrs);
  }

  async stop(): Promise<void> {
    await this.child.stdin.close().catch(() => {});
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await this.child.status;
    clearTimeout(timer);
  }
}

if (Deno.args[0] === SERVER_FLAG) {
  await runServer(JSON.parse(Deno.args[1]) as ServerConfig);
} else {
  Deno.test({
    name: "net (processes): corrupt peer rejected, non-member refused, join by secret",
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "net-proc-" });
      const peers: PeerProcess[] = [];
      const hosts: Host[] = [];
      try {
        const members = new Set<string>();
        const clientLog = memoryLogger();
        const client = await createHost({
          identityPath: `${dir}/client/identity.key`,
          listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
          isAllowedPeer: (p) => members.has(p),
          logger: clientLog,
        });
        hosts.push(client);
        const strangerMembers = new Set<string>();
        const stranger = await createHost({
          identityPath: `${dir}/stranger/identity.key`,
          listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
          isAllowedPeer: (p) => strangerMembers.has(p),
          logger: memoryLogger(),
        });
        hosts.push(stranger);
        const invite = createInvite({ clusterId: "proc", addrs: client.addrs() });
        const inv = {
          clusterId: invite.clusterId,
          inviteId: invite.inviteId,
          secretHex: toHex(invite.secret),
        };
        const [bad, good] = await Promise.all([
          PeerProcess.start({
            dir: `${dir}/bad`,
            allow: [client.peerId],
            corrupt: true,
            invite: inv,
          }),
          PeerProcess.start({
            dir: `${dir}/good`,
            allow: [client.peerId],
            corrupt: false,
            invite: inv,
          }),
        ]);
        peers.push(bad, good);
        for (const p of [bad, good]) {
          members.add(p.peerId);
          await client.rememberPeer(p.peerId, p.addrs);
        }

        // Objects: every one verified; the corrupt peer is caught and the good one serves all.
        const expected = new Map<string, Uint8Array>();
        for (let i = 0; i < OBJECTS; i++) expected.set(toHex(sha256(objectData(i))), objectData(i));
        const hashes = [...expected.keys()].map((hex) =>
          Uint8Array.from(hex.match(/../g)!.map((b) => parseInt(b, 16)))
        );
        const got = new Map<string, Uint8Array>();
        const fetcher = new ObjectFetcher(client);
        const r = await fetcher.fetch(hashes, [bad.peerId, good.peerId], (h, bytes) => {
          got.set(toHex(h), bytes);
        }, { window: 4, batch: 2 });
        assert.equal(r.fetched, OBJECTS);
        assert.deepEqual(r.missing, []);
        assert.deepEqual(r.badPeers, [bad.peerId]);
        for (const [hex, data] of expected) assert.deepEqual(got.get(hex), data);
        assert.ok(clientLog.lines.some((l) => l.includes(bad.peerId) && /corrupt/.test(l)));

        // A non-member: its raft stream is reset unread and it gets no objects.
        strangerMembers.add(good.peerId);
        await stranger.rememberPeer(good.peerId, good.addrs);
        assert.ok(await refused(stranger, good.peerId), "raft stream of a non-member");
        const strangerFetcher = new ObjectFetcher(stranger);
        const none = await strangerFetcher.fetch(hashes.slice(0, 5), [good.peerId], () => {
          assert.fail("objects served to a non-member");
        });
        assert.equal(none.fetched, 0);
        assert.equal(none.missing.length, 5);

        // A wrong secret is refused; the right one admits the stranger, who can then fetch.
        const serverInvite = parseInvite(formatInvite({ ...invite, addrs: good.addrs }));
        await assert.rejects(
          joinCluster(stranger, { ...serverInvite, secret: new Uint8Array(32).fill(3) }),
          (err: unknown) => err instanceof JoinError && err.code === "secret-mismatch",
        );
        const joined = await joinCluster(stranger, serverInvite);
        assert.equal(joined.serverPeer, good.peerId);
        const after = await strangerFetcher.fetch(hashes.slice(0, 5), [good.peerId], () => {});
        assert.equal(after.fetched, 5);
        // And the raft protocol now answers it too (no reset: the channel stays up).
        const ch = await openMessageChannel(stranger, () => {});
        assert.ok(ch.send(good.peerId, [new Uint8Array([1])]));
        await ch.close();
      } finally {
        await Promise.all(hosts.map((h) => h.stop().catch(() => {})));
        await Promise.all(peers.map((p) => p.stop()));
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    },
  });
}
