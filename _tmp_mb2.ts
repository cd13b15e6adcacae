import { encodeObjectFrame, objectsCodec } from "./src/net/codec.ts";
const hash = new Uint8Array(32).fill(3);
for (const n of [0, 1, 23, 24, 255, 256, 65535, 65536, 100000]) {
  const data = new Uint8Array(n).map((_, i) => i * 7);
  const a = objectsCodec.encodeFrame({ type: "object", hash, data });
  const b = encodeObjectFrame(hash, data);
  console.log(n, a.length === b.length && a.every((x, i) => x === b[i]));
}
const data = crypto.getRandomValues(new Uint8Array(65536));
const t = performance.now();
for (let i = 0; i < 5000; i++) encodeObjectFrame(hash, data);
console.log("fast us/obj", ((performance.now() - t) * 1000 / 5000).toFixed(1));
