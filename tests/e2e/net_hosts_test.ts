/**
 * The network layer end to end with in-process hosts on 127.0.0.1 over QUIC: connection and
 * membership gating, the join handshake (right secret, wrong secret, unknown or expired invite,
 * rate limit), the raft message channel, and object transfer (verification, missing objects,
 * a corrupt peer rejected and its objects fetched from another).
 *
 * libp2p leaves short timers behind after stop (address-manager debounce), so the op and
 * resource sanitizers are off; every host is stopped in a finally block.
 */
import assert from "node:assert/strict";
import { peerIdFromString } from "@libp2p/peer-id";
import { sha256, toHex } from "../../src/chunk/hash.ts";
import { encodeObjectFrame } from "../../src/net/codec.ts";
import {
  createInvite,
  FramedStream,
  type Invite,
  joinCluster,
  JoinError,
  type JoinRequest,
  MessageChannel,
  ObjectFetcher,
  OBJECTS_PROTOCOL,
  objectsCodec,
  openMessageChannel,
  RAFT_PROTOCOL,
  raftCodec,
  serveJoin,
  serveObjects,
} from "../../src/net/mod.ts";
import {
  eventually,
  hashesOf,
  hosts,
  provider,
  randomObjects,
  refused,
  type TestHost,
} from "../helpers/net.ts";

function serveInvite(server: TestHost, invite: Invite, admitted: JoinRequest[], opts: {
  resolve?: (id: string) => { secret: Uint8Array; expiresAt: number | null } | null;
} = {}) {
  return serveJoin(server.host, {
    clusterId: invite.clusterId,
    resolveInvite: opts.resolve ??
      ((id) =>
        id === invite.inviteId ? { secret: invite.secret, expiresAt: invite.expiresAt } : null),
    admit: (req) => {
      admitted.push(req);
      server.members.add(req.peerId);
      return Promise.resolve({
        members: [...server.members].map((p) => ({
          peerId: p,
          addrs: p === server.host.peerId ? server.host.addrs() : [],
        })),
        data: new TextEncoder().encode("welcome"),
      });
    },
  });
}

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "net: two members connect over QUIC and talk on a protocol",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [a, b] = h.list;
    await h.mesh(a, b);
    await b.host.handle("/test/echo/1", async (stream) => {
      for await (const m of stream) stream.send(m);
      await stream.close();
    }, { membersOnly: true });
    const s = await a.host.openStream(b.host.peerId, "/test/echo/1");
    s.send(new TextEncoder().encode("ping"));
    await s.close();
    let got = "";
    for await (const m of s) got += new TextDecoder().decode(m.subarray());
    assert.equal(got, "ping");
    const conn = a.host.connections().find((c) => c.peerId === b.host.peerId);
    assert.ok(conn !== undefined && conn.member);
    assert.match(conn.remoteAddr, /\/udp\/\d+\/quic-v1/);
  },
});

Deno.test({
  name: "net: with the TCP fallback on, members reach each other over TCP (noise + yamux)",
  ...opts,
  async fn() {
    await using h = await hosts(2, {}, { enableTcp: true });
    const [a, b] = h.list;
    const tcpAddrs = b.host.addrs().filter((x) => x.includes("/tcp/"));
    assert.ok(tcpAddrs.length > 0, `b listens on TCP too: ${b.host.addrs().join(" ")}`);
    a.members.add(b.host.peerId);
    b.members.add(a.host.peerId);
    await a.host.rememberPeer(b.host.peerId, tcpAddrs);
    await b.host.handle("/test/echo/1", async (stream) => {
      for await (const m of stream) stream.send(m);
      await stream.close();
    }, { membersOnly: true });
    const s = await a.host.openStream(b.host.peerId, "/test/echo/1");
    s.send(new TextEncoder().encode("over tcp"));
    await s.close();
    let got = "";
    for await (const m of s) got += new TextDecoder().decode(m.subarray());
    assert.equal(got, "over tcp");
    const conn = a.host.connections().find((c) => c.peerId === b.host.peerId);
    assert.match(conn?.remoteAddr ?? "", /\/tcp\/\d+/);
  },
});

Deno.test({
  name: "net: join with the invite's secret makes the joiner a member; both sides authenticated",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [server, joiner] = h.list;
    const invite = createInvite({ clusterId: "c1", addrs: server.host.addrs(), ttlMs: 60_000 });
    const admitted: JoinRequest[] = [];
    await serveInvite(server, invite, admitted);
    const result = await joinCluster(joiner.host, invite);
    assert.equal(result.serverPeer, server.host.peerId);
    assert.deepEqual(admitted.map((r) => [r.peerId, r.inviteId]), [[
      joiner.host.peerId,
      invite.inviteId,
    ]]);
    assert.deepEqual(
      result.members.map((m) => m.peerId).sort(),
      [server.host.peerId, joiner.host.peerId].sort(),
    );
    assert.equal(new TextDecoder().decode(result.data), "welcome");
    // The joiner can now use members-only protocols once its daemon trusts the members.
    for (const m of result.members) joiner.members.add(m.peerId);
    const got: string[] = [];
    await openMessageChannel(server.host, (from, batch) => got.push(`${from}:${batch.length}`));
    const ch = await openMessageChannel(joiner.host, () => {});
    assert.ok(ch.send(server.host.peerId, [new Uint8Array([1])]));
    await eventually("batch delivered", () => got.length === 1);
    assert.deepEqual(got, [`${joiner.host.peerId}:1`]);
    await ch.close();
  },
});

Deno.test({
  name: "net: a wrong secret, an unknown or expired invite, or a wrong cluster change nothing",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [server, joiner] = h.list;
    const invite = createInvite({ clusterId: "c1", addrs: server.host.addrs(), ttlMs: 60_000 });
    const admitted: JoinRequest[] = [];
    let expired = false;
    await serveInvite(server, invite, admitted, {
      resolve: (id) =>
        id === invite.inviteId
          ? { secret: invite.secret, expiresAt: expired ? Date.now() - 1 : invite.expiresAt }
          : null,
    });
    const rejects = async (inv: Invite, code: JoinError["code"], re: RegExp) => {
      await assert.rejects(joinCluster(joiner.host, inv), (err: unknown) => {
        assert.ok(err instanceof JoinError, String(err));
        assert.equal(err.code, code, err.message);
        assert.match(err.message, re);
        return true;
      });
    };
    await rejects({ ...invite, secret: new Uint8Array(32).fill(1) }, "secret-mismatch", /secret/);
    await rejects({ ...invite, inviteId: "00".repeat(16) }, "rejected", /unknown or revoked/);
    await rejects(
      { ...invite, clusterId: "other" },
      "rejected",
      /not a member of the invite's cluster/,
    );
    expired = true;
    await rejects(invite, "rejected", /expired/);
    assert.deepEqual(admitted, [], "admit was never called");
    assert.deepEqual([...server.members], [server.host.peerId], "membership unchanged");
    await eventually(
      "server logged the wrong secret",
      () => server.log.lines.some((l) => /secret did not match|wrong invite secret/.test(l)),
    );
  },
});

Deno.test({
  name: "net: join attempts are rate-limited per remote address",
  ...opts,
  async fn() {
    await using h = await hosts(2, { joinRate: { burst: 2, perSecond: 0 } });
    const [server, joiner] = h.list;
    const invite = createInvite({ clusterId: "c1", addrs: server.host.addrs() });
    await serveInvite(server, invite, []);
    const wrong = { ...invite, secret: new Uint8Array(32).fill(2) };
    for (let i = 0; i < 2; i++) {
      await assert.rejects(joinCluster(joiner.host, wrong), /secret/);
    }
    // Even the right secret is refused now: this address is out of attempts.
    await assert.rejects(joinCluster(joiner.host, invite), /too many join attempts/);
  },
});

Deno.test({
  name: "net: a non-member cannot use the raft or objects protocols",
  ...opts,
  async fn() {
    await using h = await hosts(3);
    const [server, member, stranger] = h.list;
    await h.mesh(server, member);
    const invite = createInvite({ clusterId: "c1", addrs: server.host.addrs() });
    await serveInvite(server, invite, []); // strangers may connect, for the join protocol only
    const got: string[] = [];
    await openMessageChannel(server.host, (from) => got.push(from));
    const calls: string[] = [];
    const store = randomObjects(3);
    await serveObjects(server.host, provider(store, { calls }));

    // The stranger knows the server's address and peer id (as if it held an old invite).
    await stranger.host.rememberPeer(server.host.peerId, server.host.addrs());
    stranger.members.add(server.host.peerId); // it trusts the server; the server does not trust it
    assert.ok(await refused(stranger.host, server.host.peerId), "raft stream of a non-member");
    const fetcher = new ObjectFetcher(stranger.host);
    const r = await fetcher.fetch(hashesOf(store), [server.host.peerId], () => {
      assert.fail("a non-member must not receive objects");
    }, { stallMs: 2000 });
    assert.equal(r.fetched, 0);
    assert.equal(r.missing.length, 3);
    await assert.rejects(fetcher.has(server.host.peerId, hashesOf(store)));

    // The member is served; the stranger's attempts reached no handler.
    const mch = await openMessageChannel(member.host, () => {});
    mch.send(server.host.peerId, [new Uint8Array([2])]);
    await eventually("member batch", () => got.length === 1);
    assert.deepEqual(got, [member.host.peerId]);
    assert.deepEqual(calls, [], "the object provider was never asked for a stranger");
    assert.ok(server.log.lines.some((l) => l.includes(`refused ${RAFT_PROTOCOL} stream`)));
    assert.ok(server.log.lines.some((l) => l.includes(`refused ${OBJECTS_PROTOCOL} stream`)));
    await mch.close();
  },
});

Deno.test({
  name: "net: strangers are refused at connect unless joins are served, then dropped in time",
  ...opts,
  async fn() {
    await using closed = await hosts(2, { acceptStrangers: false });
    const [a, b] = closed.list;
    b.members.add(a.host.peerId);
    await b.host.rememberPeer(a.host.peerId, a.host.addrs());
    await assert.rejects(b.host.openStream(a.host.peerId, RAFT_PROTOCOL));
    assert.equal(a.host.connections().length, 0);

    await using open = await hosts(2, { strangerTtlMs: 1000 });
    const [s, c] = open.list;
    await serveInvite(s, createInvite({ clusterId: "c", addrs: s.host.addrs() }), []);
    c.members.add(s.host.peerId);
    await c.host.rememberPeer(s.host.peerId, s.host.addrs());
    await c.host.libp2p.dial(peerIdFromString(s.host.peerId));
    await eventually("stranger connected", () => s.host.connections().length === 1);
    assert.equal(s.host.connections()[0].member, false);
    await eventually("stranger connection closed", () => s.host.connections().length === 0);
  },
});

Deno.test({
  name: "net: a removed member is cut off and its connection closed",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [a, b] = h.list;
    await h.mesh(a, b);
    const got: number[] = [];
    await openMessageChannel(a.host, (_from, batch) => got.push(batch[0][0]));
    const ch = await openMessageChannel(b.host, () => {});
    ch.send(a.host.peerId, [new Uint8Array([1])]);
    await eventually("first batch", () => got.length === 1);
    a.members.delete(b.host.peerId);
    ch.send(a.host.peerId, [new Uint8Array([2])]);
    await a.host.revalidate();
    await eventually("connection closed", () => a.host.connections().length === 0);
    assert.deepEqual(got, [1], "nothing delivered after removal");
    await ch.close();
  },
});

Deno.test({
  name: "net: raft batches arrive in order; sends to an unreachable peer are dropped, not blocked",
  ...opts,
  async fn() {
    await using h = await hosts(3);
    const [a, b, gone] = h.list;
    await h.mesh(a, b, gone);
    const got: number[] = [];
    await openMessageChannel(a.host, (_from, batch) => {
      for (const m of batch) got.push(new DataView(m.buffer, m.byteOffset).getUint32(0));
    });
    const ch: MessageChannel = await openMessageChannel(b.host, () => {}, {
      backoffMinMs: 10_000,
      dialTimeoutMs: 500,
    });
    const n = 500;
    for (let i = 0; i < n; i++) {
      const m = new Uint8Array(4);
      new DataView(m.buffer).setUint32(0, i);
      assert.ok(ch.send(a.host.peerId, [m]));
    }
    await eventually("all batches", () => got.length === n);
    assert.deepEqual(got, Array.from({ length: n }, (_, i) => i));
    assert.equal(ch.stats.droppedBatches, 0);

    // A peer that is gone: the first send queues while dialing, the dial fails, and later
    // sends are dropped during the backoff instead of waiting.
    const goneId = gone.host.peerId;
    await gone.host.stop();
    ch.send(goneId, [new Uint8Array([1])]);
    await eventually("dial failed", () => ch.stats.reconnects >= 1);
    assert.equal(ch.send(goneId, [new Uint8Array([2])]), false);
    assert.ok(ch.stats.droppedBatches >= 2);
    await ch.close();
  },
});

Deno.test({
  name: "net: objects arrive verified from several peers; missing ones are reported",
  ...opts,
  async fn() {
    await using h = await hosts(3);
    const [client, p1, p2] = h.list;
    await h.mesh(client, p1, p2);
    const store = randomObjects(300, 20_000);
    const half = new Map([...store].slice(0, 150));
    // p1 serves from reused buffers, given back once copied into its send buffer: every
    // object must still arrive intact.
    const pooled = { released: 0 };
    await serveObjects(p1.host, provider(store, { pooled }), { sendBuffer: 256 * 1024 });
    await serveObjects(p2.host, provider(half));
    const fetcher = new ObjectFetcher(client.host);
    const absent = sha256(new Uint8Array([42]));
    const got = new Map<string, Uint8Array>();
    const wanted = [...hashesOf(store), absent, hashesOf(store)[0]]; // one unknown, one duplicate
    const r = await fetcher.fetch(wanted, [p1.host.peerId, p2.host.peerId], (hash, bytes) => {
      assert.ok(!got.has(toHex(hash)), "each object delivered once");
      got.set(toHex(hash), bytes);
    }, { window: 4, batch: 2 });
    assert.equal(r.fetched, 300);
    assert.deepEqual(r.missing.map(toHex), [toHex(absent)]);
    assert.deepEqual(r.badPeers, []);
    for (const [hex, data] of store) assert.deepEqual(got.get(hex), data);
    assert.equal(r.bytes, [...store.values()].reduce((n, d) => n + d.length, 0));
    assert.ok(pooled.released > 0, "p1 gave its buffers back");
    const held = await fetcher.has(p2.host.peerId, [
      hashesOf(store)[0],
      hashesOf(store)[200],
      absent,
    ]);
    assert.deepEqual(held, [true, false, false]);
  },
});

Deno.test({
  name: "net: a member that stops answering is given up and remembered; one that refuses is not",
  ...opts,
  async fn() {
    await using h = await hosts(4);
    const [client, silent, refusing, good] = h.list;
    await h.mesh(client, silent, refusing, good);
    const store = randomObjects(200);
    // Silent: takes the stream and every request, answers nothing (a stopped process keeps its
    // connection for a while). Refusing: serves no objects protocol at all. Good: everything.
    await serveObjects(silent.host, {
      has: () => Promise.resolve(true),
      get: () => new Promise(() => {}),
    });
    // The good one is slow enough that the fetch outlasts the stall limit: the silent one
    // holds requests (it is asked from the start) until it is given up, not until the end.
    await serveObjects(good.host, provider(store, { delayMs: 20 }));
    const fetcher = new ObjectFetcher(client.host);
    const got = new Set<string>();
    const r = await fetcher.fetch(
      hashesOf(store),
      [silent.host.peerId, refusing.host.peerId, good.host.peerId],
      (hash) => {
        got.add(toHex(hash));
      },
      { stallMs: 300, maxPeerFailures: 1, streamsPerPeer: 1, window: 4, batch: 2 },
    );
    assert.equal(r.fetched, 200);
    assert.deepEqual(r.missing, []);
    assert.equal(got.size, 200);
    // What the silent one was asked for came from the good one once it was given up. Later
    // callers can leave it out; the one that refused at once is not held against it.
    assert.ok(fetcher.isUnresponsive(silent.host.peerId));
    assert.ok(!fetcher.isUnresponsive(refusing.host.peerId));
    assert.ok(!fetcher.isUnresponsive(good.host.peerId));
    assert.ok(!fetcher.isAvoided(silent.host.peerId), "silence is not corruption");
  },
});

Deno.test({
  name: "net: objects outstanding at a slow peer are asked of a faster one at the end (endgame)",
  ...opts,
  async fn() {
    await using h = await hosts(3);
    const [client, slow, fast] = h.list;
    await h.mesh(client, slow, fast);
    const store = randomObjects(60);
    const slowCalls: string[] = [];
    const fastCalls: string[] = [];
    await serveObjects(slow.host, provider(store, { delayMs: 1500, calls: slowCalls }));
    await serveObjects(fast.host, provider(store, { calls: fastCalls }));
    const fetcher = new ObjectFetcher(client.host);
    const got = new Map<string, Uint8Array>();
    const r = await fetcher.fetch(
      hashesOf(store),
      [slow.host.peerId, fast.host.peerId],
      (hash, bytes) => {
        assert.ok(!got.has(toHex(hash)), "each object delivered once");
        got.set(toHex(hash), bytes);
      },
      { streamsPerPeer: 1, window: 8, batch: 4 },
    );
    assert.equal(r.fetched, 60);
    assert.deepEqual(r.missing, []);
    for (const [hex, data] of store) assert.deepEqual(got.get(hex), data);
    // What the slow peer was still working on was asked of the fast one too.
    const askedOfFast = new Set(fastCalls);
    assert.ok(slowCalls.some((hex) => askedOfFast.has(hex)), "an object asked of both peers");
    assert.ok(!fetcher.isUnresponsive(slow.host.peerId), "slow is not silent");
  },
});

Deno.test({
  name: "net: a corrupt object is rejected, its peer avoided, and the object fetched from another",
  ...opts,
  async fn() {
    await using h = await hosts(3);
    const [client, bad, good] = h.list;
    await h.mesh(client, bad, good);
    const store = randomObjects(40);
    await serveObjects(bad.host, provider(store, { corrupt: true }));
    // The good peer is slow, so the corrupt one is certainly asked first.
    await serveObjects(good.host, provider(store, { delayMs: 20 }));
    const fetcher = new ObjectFetcher(client.host);
    const got = new Map<string, Uint8Array>();
    const r = await fetcher.fetch(
      hashesOf(store),
      [bad.host.peerId, good.host.peerId],
      (hash, bytes) => {
        got.set(toHex(hash), bytes);
      },
      { streamsPerPeer: 1, window: 2, batch: 1 },
    );
    assert.equal(r.fetched, 40);
    assert.deepEqual(r.missing, []);
    assert.deepEqual(r.badPeers, [bad.host.peerId]);
    for (const [hex, data] of store) assert.deepEqual(got.get(hex), data, "only verified bytes");
    assert.ok(client.log.lines.some((l) => l.includes(bad.host.peerId) && l.includes("corrupt")));
    assert.ok(fetcher.isAvoided(bad.host.peerId));
    // A later fetch does not even ask the avoided peer.
    const again = await fetcher.fetch(hashesOf(store).slice(0, 1), [bad.host.peerId], () => {});
    assert.equal(again.fetched, 0);
    assert.equal(again.missing.length, 1);
  },
});

Deno.test({
  name: "net: a paused reader still gets every frame, also after the sender closed",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [a, b] = h.list;
    await h.mesh(a, b);
    const count = 24;
    await b.host.handle("/test/flood/1", async (stream) => {
      const fs = new FramedStream(stream, raftCodec, raftCodec);
      for (let i = 0; i < count; i++) {
        await fs.write({ type: "batch", msgs: [new Uint8Array(512 * 1024).fill(i)] });
      }
      await fs.close();
    }, { membersOnly: true });
    const stream = await a.host.openStream(b.host.peerId, "/test/flood/1");
    const fs = new FramedStream(stream, raftCodec, raftCodec, { readHighWater: 1024 * 1024 });
    const seen: number[] = [];
    for (let msg = await fs.read(); msg !== null; msg = await fs.read()) {
      seen.push(msg.msgs[0][0]);
      await new Promise((r) => setTimeout(r, 5)); // a slow consumer: the stream gets paused
    }
    assert.deepEqual(seen, Array.from({ length: count }, (_, i) => i));
  },
});

Deno.test({
  name: "net: a frame larger than the reader's high-water mark still arrives",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [a, b] = h.list;
    await h.mesh(a, b);
    await b.host.handle("/test/big/1", async (stream) => {
      const fs = new FramedStream(stream, raftCodec, raftCodec);
      await fs.write({ type: "batch", msgs: [new Uint8Array(3 << 20).fill(7)] });
      await fs.write({ type: "batch", msgs: [new Uint8Array([8])] });
    }, { membersOnly: true });
    const stream = await a.host.openStream(b.host.peerId, "/test/big/1");
    // Pausing at 256 KiB must not wait forever for the rest of a 3 MiB frame.
    const fs = new FramedStream(stream, raftCodec, raftCodec, { readHighWater: 256 * 1024 });
    const guard = AbortSignal.timeout(30_000); // liveness guard only: a hang fails, not slowness
    const first = await fs.read(guard);
    assert.equal(first?.msgs[0].length, 3 << 20);
    assert.equal((await fs.read(guard))?.msgs[0][0], 8);
  },
});

Deno.test({
  name: "net: a peer that floods a reader that is not reading has its stream reset",
  ...opts,
  async fn() {
    await using h = await hosts(2);
    const [a, b] = h.list;
    await h.mesh(a, b);
    let writerError: unknown = null;
    await b.host.handle("/test/flood/2", async (stream) => {
      const fs = new FramedStream(stream, objectsCodec, objectsCodec);
      try {
        for (let i = 0; i < 64; i++) {
          await fs.writeEncoded(encodeObjectFrame(new Uint8Array(32), new Uint8Array(1 << 20)));
        }
      } catch (err) {
        writerError = err;
      }
    }, { membersOnly: true });
    const stream = await a.host.openStream(b.host.peerId, "/test/flood/2");
    const fs = new FramedStream(stream, objectsCodec, objectsCodec, { readHighWater: 1 << 20 });
    // Never read: buffered bytes pass our high-water mark, the stream is paused, and libp2p
    // resets it once its own buffer passes one maximal frame: memory stays bounded.
    await eventually("stream reset", () => stream.status !== "open");
    assert.ok(stream.readBufferLength <= objectsCodec.maxFrame + 65536 + (1 << 20));
    await assert.rejects(async () => {
      while ((await fs.read()) !== null) { /* drain what was kept */ }
    });
    await eventually("writer saw the reset", () => writerError !== null);
  },
});
