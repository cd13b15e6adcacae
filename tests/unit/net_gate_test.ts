/** The membership gate and its rate limiter, without a network. */
import assert from "node:assert/strict";
import { multiaddr } from "@multiformats/multiaddr";
import { peerIdFromString } from "@libp2p/peer-id";
import type { MultiaddrConnection } from "@libp2p/interface";
import { PeerGate, remoteIp } from "../../src/net/gate.ts";
import { RateLimiter } from "../../src/net/rate_limit.ts";

const MEMBER = "12D3KooWQKRad9DtHDm2nJdvUm14vYE6tSenyh482NqHnX9qpvQp";
const STRANGER = "12D3KooWSZoNqJBq5x9DLAnSujtjqTvMFVtjbXAxdrmLamGJ8hmD";
const addr = (ip: string) => multiaddr(`/ip4/${ip}/udp/4001/quic-v1`);

Deno.test("token buckets refill over time and forget the stalest keys", () => {
  let now = 0;
  const rl = new RateLimiter({ burst: 2, perSecond: 1 }, 3, () => now);
  assert.ok(rl.tryTake("a"));
  assert.ok(rl.tryTake("a"));
  assert.ok(!rl.tryTake("a"), "burst exhausted");
  now = 500;
  assert.ok(!rl.tryTake("a"), "half a token is not a token");
  now = 1000;
  assert.ok(rl.tryTake("a"));
  assert.ok(!rl.tryTake("a"));
  now = 60_000;
  assert.ok(rl.tryTake("a") && rl.tryTake("a") && !rl.tryTake("a"), "refill capped at burst");
  for (const k of ["b", "c", "d", "e"]) rl.tryTake(k);
  assert.equal(rl.size, 3, "bounded number of keys");
  assert.throws(() => new RateLimiter({ burst: 0, perSecond: 1 }), RangeError);
});

Deno.test("members always pass; strangers are bounded per IP and in number", () => {
  const members = new Set([MEMBER]);
  let strangers = 0;
  const gate = new PeerGate((p) => members.has(p), {
    strangerRate: { burst: 2, perSecond: 0 },
    maxStrangers: 3,
  }, () => strangers);
  assert.ok(!gate.admitInbound(STRANGER, addr("10.0.0.9")), "no strangers before joins are served");
  gate.openForJoins();
  for (let i = 0; i < 10; i++) assert.ok(gate.admitInbound(MEMBER, addr("10.0.0.1")));
  assert.ok(gate.admitInbound(STRANGER, addr("10.0.0.1")));
  assert.ok(gate.admitInbound(STRANGER, addr("10.0.0.1")));
  assert.ok(!gate.admitInbound(STRANGER, addr("10.0.0.1")), "per-IP rate");
  assert.ok(gate.admitInbound(STRANGER, addr("10.0.0.2")), "another IP has its own bucket");
  strangers = 3;
  assert.ok(!gate.admitInbound(STRANGER, addr("10.0.0.3")), "too many strangers at once");
  assert.ok(gate.admitInbound(MEMBER, addr("10.0.0.3")), "members are not counted against it");
  members.delete(MEMBER);
  assert.ok(!gate.admitInbound(MEMBER, addr("10.0.0.3")), "a removed member is a stranger");
});

Deno.test("with strangers disabled only members connect", () => {
  const gate = new PeerGate((p) => p === MEMBER, { acceptStrangers: false }, () => 0);
  gate.openForJoins();
  assert.ok(gate.admitInbound(MEMBER, addr("10.0.0.1")));
  assert.ok(!gate.admitInbound(STRANGER, addr("10.0.0.1")));
});

Deno.test("the gater denies dials to non-members except during a join", async () => {
  const gate = new PeerGate((p) => p === MEMBER, {}, () => 0);
  const g = gate.connectionGater();
  const member = peerIdFromString(MEMBER);
  const stranger = peerIdFromString(STRANGER);
  assert.equal(await g.denyDialPeer!(member), false);
  assert.equal(await g.denyDialPeer!(stranger), true);
  assert.equal(
    await g.denyDialMultiaddr!(multiaddr(`/ip4/1.2.3.4/udp/1/quic-v1/p2p/${STRANGER}`)),
    true,
  );
  assert.equal(await g.denyDialMultiaddr!(multiaddr("/ip4/1.2.3.4/udp/1/quic-v1")), false);
  const inner = await gate.withDialException(STRANGER, async () => {
    assert.equal(await g.denyDialPeer!(stranger), false);
    assert.equal(
      await g.denyOutboundEncryptedConnection!(stranger, {} as MultiaddrConnection),
      false,
    );
    return "joined";
  });
  assert.equal(inner, "joined");
  assert.equal(await g.denyDialPeer!(stranger), true, "the exception ends with the join");
  await assert.rejects(gate.withDialException(STRANGER, () => Promise.reject(new Error("x"))));
  assert.equal(await g.denyDialPeer!(stranger), true, "and also when the join fails");
  const inbound = { remoteAddr: addr("10.9.9.9") } as MultiaddrConnection;
  assert.equal(await g.denyInboundEncryptedConnection!(member, inbound), false);
});

Deno.test("a throwing membership callback means not a member", () => {
  const gate = new PeerGate(
    () => {
      throw new Error("store closed");
    },
    { acceptStrangers: false },
    () => 0,
  );
  assert.equal(gate.isMember(MEMBER), false);
  assert.equal(remoteIp(multiaddr("/ip6/::1/udp/1/quic-v1")), "::1");
});

Deno.test("clients: admitted for a while, renewed up to a cap, bounded per IP and in all", async () => {
  const gate = new PeerGate(() => false, {
    clientTtlMs: 2_000,
    maxClients: 3,
    maxClientsPerIp: 2,
  }, () => 0);
  const far = Date.now() + 60_000;
  assert.ok(gate.admitClient("c1", "10.0.0.1", far));
  assert.ok(gate.admitClient("c2", "10.0.0.1", far));
  assert.equal(gate.admitClient("c3", "10.0.0.1", far), false, "per-IP bound");
  assert.ok(gate.admitClient("c4", "10.0.0.2", far));
  assert.equal(gate.admitClient("c5", "10.0.0.3", far), false, "overall bound");
  assert.ok(gate.isClient("c1") && !gate.isClient("c3") && !gate.isMember("c1"));
  // A client that keeps working stays; one that stops lapses after the TTL.
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 700));
    gate.renewClient("c1");
  }
  assert.ok(gate.isClient("c1"), "renewed");
  assert.equal(gate.isClient("c2"), false, "lapsed");
  // Renewal never goes past the cap (an invite's expiry).
  assert.ok(gate.admitClient("c6", "10.0.0.4", Date.now() + 30));
  await new Promise((r) => setTimeout(r, 20));
  gate.renewClient("c6");
  await new Promise((r) => setTimeout(r, 25));
  assert.equal(gate.isClient("c6"), false, "capped");
  gate.dropClient("c1");
  assert.equal(gate.isClient("c1"), false);
});
