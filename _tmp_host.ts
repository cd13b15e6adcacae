import { createHost } from "./src/net/host.ts";
const dir = await Deno.makeTempDir();
const members = new Set<string>();
const a = await createHost({
  identityPath: `${dir}/a/identity.key`,
  listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
  isAllowedPeer: (p) => members.has(p),
});
const b = await createHost({
  identityPath: `${dir}/b/identity.key`,
  listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
  isAllowedPeer: (p) => members.has(p),
});
const c = await createHost({
  identityPath: `${dir}/c/identity.key`,
  listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
  isAllowedPeer: () => true,
});
members.add(a.peerId);
members.add(b.peerId);
console.log(a.addrs());
await b.handle("/t/1", async (s, peer) => {
  console.log("b got stream from", peer === a.peerId ? "a" : peer);
  for await (const m of s) s.send(m);
  await s.close();
}, { membersOnly: true });
await a.rememberPeer(b.peerId, b.addrs());
const s = await a.openStream(b.peerId, "/t/1");
s.send(new TextEncoder().encode("hi"));
await s.close();
for await (const m of s) console.log("a got", new TextDecoder().decode(m.subarray()));
// non-member c
await c.rememberPeer(b.peerId, b.addrs());
try {
  const s2 = await c.openStream(b.peerId, "/t/1");
  s2.send(new TextEncoder().encode("x"));
  for await (const m of s2) console.log("c got", m);
  console.log("c stream status", s2.status);
} catch (e) {
  console.log("c error", String(e));
}
console.log(b.connections());
await Promise.all([a.stop(), b.stop(), c.stop()]);
console.log("stopped");
