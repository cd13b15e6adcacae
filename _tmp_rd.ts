import * as napi from "./node_modules/@chainsafe/libp2p-quic/dist/src/napi.js";
// deno-lint-ignore no-explicit-any
const proto = (napi as any).Stream.prototype;
const orig = proto.read;
const size = Number(Deno.args[0]);
const hist = new Map<number, number>();
proto.read = function (n: number) {
  return orig.call(this, size > 0 ? size : n).then((c: Uint8Array | null) => {
    if (c) {
      const b = 2 ** Math.ceil(Math.log2(c.length));
      hist.set(b, (hist.get(b) ?? 0) + 1);
    }
    return c;
  });
};
const { createHost } = await import("./src/net/host.ts");
const dir = await Deno.makeTempDir();
const a = await createHost({
  identityPath: `${dir}/a`,
  listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
  isAllowedPeer: () => true,
});
const b = await createHost({
  identityPath: `${dir}/b`,
  listen: ["/ip4/127.0.0.1/udp/0/quic-v1"],
  isAllowedPeer: () => true,
});
const total = 256 * 1024 * 1024;
await b.handle("/raw", async (s) => {
  const block = new Uint8Array(1 << 20);
  for (let left = total; left > 0; left -= block.length) if (!s.send(block)) await s.onDrain();
  await s.close();
}, { membersOnly: false });
await a.rememberPeer(b.peerId, b.addrs());
const t0 = performance.now();
const s = await a.openStream(b.peerId, "/raw");
let got = 0;
for await (const c of s) got += c.byteLength;
const sec = (performance.now() - t0) / 1000;
console.log(
  `read size ${size}: ${(got / 1048576 / sec).toFixed(1)} MiB/s`,
  [...hist].sort((x, y) => x[0] - y[0]),
);
await a.stop();
await b.stop();
