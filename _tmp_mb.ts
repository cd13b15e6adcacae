import { objectsCodec } from "./src/net/codec.ts";
import { FrameDecoder } from "./src/net/frame.ts";
import { sha256 } from "./src/chunk/hash.ts";
const data = crypto.getRandomValues(new Uint8Array(65536));
const hash = sha256(data);
const N = 5000;
let t = performance.now();
let frames: Uint8Array[] = [];
for (let i = 0; i < N; i++) frames.push(objectsCodec.encodeFrame({ type: "object", hash, data }));
console.log("encodeFrame us/obj", ((performance.now() - t) * 1000 / N).toFixed(1));
// concat into 256 KiB chunks
const all = new Uint8Array(frames.reduce((a, f) => a + f.length, 0));
let o = 0;
for (const f of frames) {
  all.set(f, o);
  o += f.length;
}
frames = [];
t = performance.now();
const dec = new FrameDecoder(objectsCodec.maxFrame);
let n = 0;
for (let off = 0; off < all.length; off += 262144) {
  dec.push(all.subarray(off, off + 262144));
  let f;
  while ((f = dec.next()) !== null) {
    objectsCodec.decode(f);
    n++;
  }
}
console.log("decode us/obj", ((performance.now() - t) * 1000 / N).toFixed(1), n);
t = performance.now();
for (let i = 0; i < N; i++) sha256(data);
console.log("sha256 us/obj", ((performance.now() - t) * 1000 / N).toFixed(1));
t = performance.now();
for (let i = 0; i < N; i++) data.slice();
console.log("slice us/obj", ((performance.now() - t) * 1000 / N).toFixed(1));
