/**
 * The network codec: framing (any split of the byte stream, size limit enforced from the
 * header), every message type of every protocol round-trips, and decoders refuse malformed,
 * oversized, unknown or cross-protocol input with a WireDecodeError.
 */
import assert from "node:assert/strict";
import { sha256 } from "../../src/chunk/hash.ts";
import { cborEncode } from "../../src/wire/mod.ts";
import {
  encodeObjectFrame,
  encodeObjectFrameHeader,
  encodeStoreFrameHeader,
  joinRequestCodec,
  joinResponseCodec,
  MAX_OBJECT_SIZE,
  MAX_REFUSAL_LENGTH,
  MAX_WANT_HASHES,
  objectsCodec,
  raftCodec,
} from "../../src/net/codec.ts";
import { encodeFrame, FrameDecoder } from "../../src/net/frame.ts";
import { WireDecodeError, WireEncodeError } from "../../src/net/mod.ts";

const h = (b: number) => new Uint8Array(32).fill(b);

function decodeError(fn: () => unknown, code?: WireDecodeError["code"]): WireDecodeError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof WireDecodeError, `expected WireDecodeError, got ${err}`);
    if (code !== undefined) assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail("expected a WireDecodeError");
}

Deno.test("frames survive every split of the byte stream", () => {
  const payloads = [new Uint8Array([1, 2, 3]), new Uint8Array(0), new Uint8Array(300).fill(9)];
  const stream = new Uint8Array(payloads.reduce((n, p) => n + 4 + p.length, 0));
  let o = 0;
  for (const p of payloads) {
    const f = encodeFrame(p, 1024);
    stream.set(f, o);
    o += f.length;
  }
  for (let cut = 0; cut <= stream.length; cut++) {
    for (const step of [1, 7, stream.length]) {
      const d = new FrameDecoder(1024);
      const got: Uint8Array[] = [];
      const feed = (bytes: Uint8Array) => {
        for (let i = 0; i < bytes.length; i += step) {
          d.push(bytes.subarray(i, i + step));
          for (let f = d.next(); f !== null; f = d.next()) got.push(f.slice());
        }
      };
      feed(stream.subarray(0, cut));
      feed(stream.subarray(cut));
      assert.deepEqual(got, payloads);
      d.finish();
      assert.equal(d.bufferedBytes, 0);
    }
  }
});

Deno.test("a frame header above the limit is refused before its payload arrives", () => {
  const d = new FrameDecoder(100);
  d.push(new Uint8Array([0, 0, 0, 101]));
  decodeError(() => d.next(), "frame-too-large");
  const huge = new FrameDecoder(100);
  huge.push(new Uint8Array([0xff, 0xff, 0xff, 0xff]));
  decodeError(() => huge.next(), "frame-too-large");
  assert.throws(() => encodeFrame(new Uint8Array(101), 100), WireEncodeError);
});

Deno.test("a stream that ends inside a frame is truncated", () => {
  const d = new FrameDecoder(100);
  d.push(new Uint8Array([0, 0, 0, 5, 1, 2]));
  assert.equal(d.next(), null);
  decodeError(() => d.finish(), "truncated");
  const h2 = new FrameDecoder(100);
  h2.push(new Uint8Array([0, 0]));
  assert.equal(h2.next(), null);
  decodeError(() => h2.finish(), "truncated");
});

Deno.test("every message of every protocol round-trips", () => {
  const cases = [
    [joinRequestCodec, {
      type: "hello",
      version: 1,
      clusterId: "c-1",
      inviteId: new Uint8Array(16).fill(1),
      nonce: h(2),
    }],
    [joinRequestCodec, { type: "proof", proof: h(3) }],
    [joinResponseCodec, { type: "challenge", nonce: h(4), proof: h(5) }],
    [joinResponseCodec, {
      type: "accepted",
      members: [{ peerId: "12D3KooWabc", addrs: ["/ip4/127.0.0.1/udp/1/quic-v1"] }, {
        peerId: "x",
        addrs: [],
      }],
      data: new Uint8Array([7, 7]),
    }],
    [joinResponseCodec, { type: "rejected", reason: "no" }],
    [raftCodec, { type: "batch", msgs: [new Uint8Array([1]), new Uint8Array(1000).fill(2)] }],
    [raftCodec, { type: "batch", msgs: [] }],
    [objectsCodec, { type: "have", hashes: [h(1), h(2)] }],
    [objectsCodec, { type: "haveReply", bits: new Uint8Array([0b101]) }],
    [objectsCodec, { type: "want", hashes: [h(3)] }],
    [objectsCodec, { type: "object", hash: h(4), data: new Uint8Array([1, 2, 3]) }],
    [objectsCodec, { type: "object", hash: h(4), data: new Uint8Array(0) }],
    [objectsCodec, { type: "missing", hash: h(5) }],
    [objectsCodec, { type: "store", hash: h(6), data: new Uint8Array([4, 5]) }],
    [objectsCodec, { type: "store", hash: h(6), data: new Uint8Array(0) }],
    [objectsCodec, { type: "stored", count: 1 }],
    [objectsCodec, { type: "flush" }],
    [objectsCodec, { type: "flushed", count: 0 }],
    [objectsCodec, { type: "flushed", count: 2 ** 40 }],
    [objectsCodec, { type: "refused", reason: "this node takes no pushed objects" }],
    [objectsCodec, { type: "refused", reason: "" }],
  ] as const;
  for (const [codec, msg] of cases) {
    // deno-lint-ignore no-explicit-any
    const c = codec as any;
    const frame: Uint8Array = c.encodeFrame(msg);
    const d = new FrameDecoder(c.maxFrame);
    d.push(frame);
    const payload = d.next();
    assert.ok(payload !== null);
    const back = c.decode(payload);
    assert.deepEqual(back, msg);
    // Decoded byte fields are plain Uint8Arrays (not Node Buffers, whose slice() aliases).
    for (const v of Object.values(back)) {
      if (v instanceof Uint8Array) assert.equal(v.constructor, Uint8Array);
    }
  }
});

Deno.test("the hand-laid object frame is byte for byte the codec's", () => {
  for (const n of [0, 1, 23, 24, 255, 256, 65535, 65536, 70000]) {
    const data = new Uint8Array(n).map((_, i) => (i * 31) & 0xff);
    const generic = objectsCodec.encodeFrame({ type: "object", hash: h(9), data });
    assert.deepEqual(encodeObjectFrame(h(9), data), generic);
    const head = encodeObjectFrameHeader(h(9), data);
    assert.deepEqual(generic.subarray(0, head.length), head);
    assert.equal(head.length + n, generic.length);
  }
  assert.throws(() => encodeObjectFrame(new Uint8Array(31), new Uint8Array(1)), WireEncodeError);
  assert.throws(
    () => encodeObjectFrame(h(1), new Uint8Array(MAX_OBJECT_SIZE + 1)),
    WireEncodeError,
  );
});

Deno.test("the hand-laid store frame head is byte for byte the codec's", () => {
  for (const n of [0, 1, 23, 24, 255, 256, 65535, 65536, 262144]) {
    const data = new Uint8Array(n).map((_, i) => (i * 17) & 0xff);
    const generic = objectsCodec.encodeFrame({ type: "store", hash: h(3), data });
    const head = encodeStoreFrameHeader(h(3), data);
    assert.deepEqual(generic.subarray(0, head.length), head);
    assert.equal(head.length + n, generic.length);
    // Same layout as an object frame, a different tag: never mistaken for one.
    assert.notDeepEqual(head, encodeObjectFrameHeader(h(3), data));
  }
  assert.throws(() => encodeStoreFrameHeader(h(1).subarray(1), new Uint8Array(1)), /store\.hash/);
  assert.throws(
    () => encodeStoreFrameHeader(h(1), new Uint8Array(MAX_OBJECT_SIZE + 1)),
    WireEncodeError,
  );
});

Deno.test("encoders refuse what decoders would refuse", () => {
  assert.throws(
    () => objectsCodec.encode({ type: "refused", reason: "x".repeat(MAX_REFUSAL_LENGTH + 1) }),
    WireEncodeError,
  );
  assert.throws(() => objectsCodec.encode({ type: "flushed", count: -1 }), WireEncodeError);
  assert.throws(() => objectsCodec.encode({ type: "stored", count: 1.5 }), WireEncodeError);
  assert.throws(
    () =>
      objectsCodec.encode({ type: "store", hash: h(1), data: new Uint8Array(MAX_OBJECT_SIZE + 1) }),
    WireEncodeError,
  );
  assert.throws(
    () => objectsCodec.encode({ type: "missing", hash: new Uint8Array(31) }),
    WireEncodeError,
  );
  assert.throws(
    () => objectsCodec.encode({ type: "want", hashes: Array(MAX_WANT_HASHES + 1).fill(h(1)) }),
    WireEncodeError,
  );
  // deno-lint-ignore no-explicit-any
  assert.throws(() => raftCodec.encode({ type: "nope" } as any), WireEncodeError);
  assert.throws(
    () => raftCodec.encode({ type: "batch", msgs: [new Uint8Array(0)] }),
    WireEncodeError,
  );
});

Deno.test("decoders refuse malformed, unknown and cross-protocol messages", () => {
  const ok = objectsCodec.encode({ type: "missing", hash: h(1) });
  decodeError(() => objectsCodec.decode(new Uint8Array(0)), "malformed");
  decodeError(() => objectsCodec.decode(ok.subarray(0, ok.length - 1)), "truncated");
  const trailing = new Uint8Array(ok.length + 1);
  trailing.set(ok);
  decodeError(() => objectsCodec.decode(trailing), "malformed");
  decodeError(() => objectsCodec.decode(cborEncode({ a: 1 })), "malformed");
  decodeError(() => objectsCodec.decode(cborEncode([99, h(1)])), "unknown-type");
  decodeError(() => objectsCodec.decode(cborEncode(["missing", h(1)])), "unknown-type");
  decodeError(() => objectsCodec.decode(cborEncode([36])), "malformed");
  decodeError(() => objectsCodec.decode(cborEncode([36, h(1), 1])), "malformed");
  decodeError(() => objectsCodec.decode(cborEncode([36, new Uint8Array(31)])), "invalid-field");
  decodeError(() => objectsCodec.decode(cborEncode([36, "x".repeat(32)])), "invalid-field");
  decodeError(() => objectsCodec.decode(cborEncode([34, [h(1), 5]])), "invalid-field");
  decodeError(() => raftCodec.decode(cborEncode([16, [new Uint8Array(0)]])), "invalid-field");
  // The push messages: exact arity, bounded fields.
  decodeError(() => objectsCodec.decode(cborEncode([38, 0])), "malformed");
  decodeError(() => objectsCodec.decode(cborEncode([39])), "malformed");
  decodeError(() => objectsCodec.decode(cborEncode([39, -1])), "invalid-field");
  decodeError(() => objectsCodec.decode(cborEncode([40, "1"])), "invalid-field");
  decodeError(() => objectsCodec.decode(cborEncode([37, h(1)])), "malformed");
  decodeError(() => objectsCodec.decode(cborEncode([37, h(1), "data"])), "invalid-field");
  decodeError(
    () => objectsCodec.decode(cborEncode([41, "x".repeat(MAX_REFUSAL_LENGTH + 1)])),
    "invalid-field",
  );
  // A store frame as big as the largest object still fits the frame limit; one byte
  // more is refused by the schema.
  const biggest = new Uint8Array(MAX_OBJECT_SIZE);
  const frame = new FrameDecoder(objectsCodec.maxFrame);
  frame.push(objectsCodec.encodeFrame({ type: "store", hash: sha256(biggest), data: biggest }));
  assert.equal(objectsCodec.decode(frame.next()!).type, "store");
  decodeError(
    () => objectsCodec.decode(cborEncode([37, h(1), new Uint8Array(MAX_OBJECT_SIZE + 1)])),
    "invalid-field",
  );
  decodeError(() => joinRequestCodec.decode(cborEncode([1, -1, "c", new Uint8Array(16), h(1)])));
  decodeError(() => joinRequestCodec.decode(cborEncode([1, 1.5, "c", new Uint8Array(16), h(1)])));
  // A frame of one protocol is an unknown type to another.
  decodeError(() => raftCodec.decode(ok), "unknown-type");
  decodeError(
    () => joinRequestCodec.decode(raftCodec.encode({ type: "batch", msgs: [] })),
    "unknown-type",
  );
  // The join server reads strangers' messages with a small limit.
  decodeError(
    () => joinRequestCodec.decode(new Uint8Array(joinRequestCodec.maxFrame + 1)),
    "frame-too-large",
  );
  // Huge declared lengths inside a small message do not allocate: they fail as truncated.
  decodeError(() => objectsCodec.decode(new Uint8Array([0x9b, 0, 0, 0, 1, 0, 0, 0, 0])));
  decodeError(() =>
    objectsCodec.decode(new Uint8Array([0x5b, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]))
  );
});

Deno.test("object frames are read split: the data in a buffer of its own, however chunked", () => {
  const data = new Uint8Array(65536).map((_, i) => i * 7);
  const frame = encodeObjectFrame(h(3), data);
  const want = frame.length - data.length + 100; // cuts in the envelope and early in the data
  for (let cut = 1; cut < want; cut++) {
    const d = new FrameDecoder(objectsCodec.maxFrame);
    d.push(frame.subarray(0, cut));
    assert.equal(d.nextSplit(objectsCodec.bulk!), null);
    d.push(frame.subarray(cut));
    const f = d.nextSplit(objectsCodec.bulk!);
    assert.ok(f !== null && !(f instanceof Uint8Array), "an object frame is split");
    assert.equal(f.body.byteLength, f.body.buffer.byteLength);
    assert.deepEqual(objectsCodec.bulk!.decode(f), { type: "object", hash: h(3), data });
    assert.equal(d.bufferedBytes, 0);
  }
  // Other messages come back whole, for the generic decoder.
  const d = new FrameDecoder(objectsCodec.maxFrame);
  d.push(objectsCodec.encodeFrame({ type: "want", hashes: [h(1)] }));
  const f = d.nextSplit(objectsCodec.bulk!);
  assert.ok(f instanceof Uint8Array);
  assert.deepEqual(objectsCodec.decode(f), { type: "want", hashes: [h(1)] });
});
