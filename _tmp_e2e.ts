import * as net from "./src/net/mod.ts";
import { sha256, toHex } from "./src/chunk/hash.ts";
const dir = await Deno.makeTempDir();
const membersA = new Set<string>();
const membersB = new Set<string>();
const a = await net.createHost({
  identityPath: `${dir}/a/id`,
  listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
  isAllowedPeer: (p) => membersA.has(p),
});
const b = await net.createHost({
  identityPath: `${dir}/b/id`,
  listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
  isAllowedPeer: (p) => membersB.has(p),
});
membersA.add(a.peerId);
const invite = net.createInvite({ clusterId: "c1", addrs: a.addrs(), ttlMs: 60_000 });
const str = net.formatInvite(invite);
console.log(str.length, str.slice(0, 60));
await net.serveJoin(a, {
  clusterId: "c1",
  resolveInvite: (id) =>
    id === invite.inviteId ? { secret: invite.secret, expiresAt: invite.expiresAt } : null,
  admit: async ({ peerId }) => {
    membersA.add(peerId);
    return {
      members: [...membersA].map((p) => ({ peerId: p, addrs: p === a.peerId ? a.addrs() : [] })),
    };
  },
});
const t0 = performance.now();
const res = await net.joinCluster(b, net.parseInvite(str));
console.log(
  "joined in",
  (performance.now() - t0).toFixed(1),
  "ms",
  res.members.map((m) => m.peerId.slice(-6)),
);
for (const m of res.members) membersB.add(m.peerId);
// raft channel
const got: string[] = [];
const cha = await net.openMessageChannel(
  a,
  (from, batch) => got.push(`${from.slice(-4)}:${batch.length}`),
);
const chb = await net.openMessageChannel(b, () => {});
console.log("send", chb.send(a.peerId, [new Uint8Array([1]), new Uint8Array([2, 3])]));
chb.send(a.peerId, [new Uint8Array([9])]);
await new Promise((r) => setTimeout(r, 200));
console.log("raft got", got, chb.stats);
// objects
const store = new Map<string, Uint8Array>();
const hashes = [];
for (let i = 0; i < 200; i++) {
  const d = crypto.getRandomValues(new Uint8Array(65536));
  const h = sha256(d);
  store.set(toHex(h), d);
  hashes.push(h);
}
await net.serveObjects(a, {
  has: async (h) => store.has(toHex(h)),
  get: async (h) => store.get(toHex(h)) ?? null,
});
const fetcher = new net.ObjectFetcher(b);
const t1 = performance.now();
let n = 0;
const r = await fetcher.fetch([...hashes, new Uint8Array(32)], [a.peerId], () => {
  n++;
});
console.log("fetch", r.fetched, r.missing.length, n, (performance.now() - t1).toFixed(1), "ms");
console.log("has", await fetcher.has(a.peerId, [hashes[0], new Uint8Array(32)]));
await cha.close();
await chb.close();
await Promise.all([a.stop(), b.stop()]);
