/**
 * Fuzzing every network decoder: random bytes, random CBOR values, near-valid messages and
 * mutations of valid frames, 100,000+ cases in all (FILESYNC_FUZZ_CASES to change; the seed is
 * printed on failure and FILESYNC_FUZZ_SEED replays it). Every input must either decode to a
 * message that re-encodes to an equal message, or be refused with WireDecodeError (InviteError
 * for invite strings): no other exception, no hang, and no memory growth beyond a bound. The
 * hand-laid `object` and `store` frame envelopes must decode to exactly what they carry.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { cborEncode } from "../../src/wire/mod.ts";
import {
  encodeObjectFrameHeader,
  encodeStoreFrameHeader,
  inviteCodec,
  joinRequestCodec,
  joinResponseCodec,
  objectsCodec,
  ProtocolCodec,
  raftCodec,
} from "../../src/net/codec.ts";
import { FrameDecoder } from "../../src/net/frame.ts";
import {
  createInvite,
  formatInvite,
  INVITE_PREFIX,
  InviteError,
  parseInvite,
  WireDecodeError,
} from "../../src/net/mod.ts";

const CASES = Number(Deno.env.get("FILESYNC_FUZZ_CASES") ?? 120_000);
const SEED = Number(Deno.env.get("FILESYNC_FUZZ_SEED") ?? Date.now() % 2 ** 31);

/** mulberry32: small, fast, seedable. */
function rng(seed: number) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const bytes = (n: number) => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  return { next, int, bytes, pick: <T>(xs: readonly T[]) => xs[int(xs.length)] };
}
type Rng = ReturnType<typeof rng>;

// deno-lint-ignore no-explicit-any
type AnyCodec = ProtocolCodec<any>;
const CODECS: [string, AnyCodec][] = [
  ["join request", joinRequestCodec],
  ["join response", joinResponseCodec],
  ["raft", raftCodec],
  ["objects", objectsCodec],
  ["invite payload", inviteCodec],
];

const h = (b: number) => new Uint8Array(32).fill(b);
/** Valid messages of every type, as seeds for mutation. */
const VALID: Uint8Array[] = [
  joinRequestCodec.encode({
    type: "hello",
    version: 1,
    clusterId: "cluster",
    inviteId: new Uint8Array(16).fill(1),
    nonce: h(2),
  }),
  joinRequestCodec.encode({ type: "proof", proof: h(3) }),
  joinResponseCodec.encode({ type: "challenge", nonce: h(4), proof: h(5) }),
  joinResponseCodec.encode({
    type: "accepted",
    members: [{ peerId: "12D3KooWabc", addrs: ["/ip4/127.0.0.1/udp/4001/quic-v1"] }],
    data: new Uint8Array([1, 2, 3]),
  }),
  joinResponseCodec.encode({ type: "rejected", reason: "wrong invite secret" }),
  raftCodec.encode({ type: "batch", msgs: [new Uint8Array([1, 2]), new Uint8Array(40)] }),
  objectsCodec.encode({ type: "have", hashes: [h(1), h(2), h(3)] }),
  objectsCodec.encode({ type: "haveReply", bits: new Uint8Array([5]) }),
  objectsCodec.encode({ type: "want", hashes: [h(6)] }),
  objectsCodec.encode({ type: "object", hash: h(7), data: new Uint8Array(100).fill(8) }),
  objectsCodec.encode({ type: "missing", hash: h(9) }),
  objectsCodec.encode({ type: "store", hash: h(10), data: new Uint8Array(300).fill(11) }),
  objectsCodec.encode({ type: "stored", count: 7 }),
  objectsCodec.encode({ type: "flush" }),
  objectsCodec.encode({ type: "flushed", count: 70000 }),
  objectsCodec.encode({ type: "refused", reason: "flushing pushed objects failed" }),
  inviteCodec.encode({
    type: "invite",
    clusterId: "c",
    inviteId: new Uint8Array(16),
    secret: new Uint8Array(32),
    expiresAt: 0,
    addrs: [
      "/ip4/127.0.0.1/udp/1/quic-v1/p2p/12D3KooWQKRad9DtHDm2nJdvUm14vYE6tSenyh482NqHnX9qpvQp",
    ],
  }),
].map((b) => b.slice());

/** A random CBOR-encodable value: the shapes a hostile peer could send through any encoder. */
function randomValue(r: Rng, depth = 0): unknown {
  const k = r.int(depth > 3 ? 7 : 10);
  switch (k) {
    case 0:
      return r.int(3) === 0 ? -r.int(1e9) : r.pick([0, 1, 16, 32, 35, 64, 255, 65536, 2 ** 53]);
    case 1:
      return r.bytes(r.pick([0, 1, 16, 31, 32, 33, r.int(200)]));
    case 2:
      return "x".repeat(r.int(40));
    case 3:
      return r.pick([true, false, null, undefined, 1.5, NaN, -0]);
    case 4:
      return r.pick([16, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 1, 2, 3, 4, 5, 64]);
    case 5:
      return r.bytes(r.int(8)).buffer;
    case 6:
      return BigInt(r.int(1e6)) * 10n ** 20n;
    case 7:
      return Array.from({ length: r.int(6) }, () => randomValue(r, depth + 1));
    case 8:
      return Object.fromEntries(
        Array.from(
          { length: r.int(4) },
          (_, i) => [r.pick(["a", "__proto__", `${i}`]), randomValue(r, depth + 1)],
        ),
      );
    default:
      // A tagged-array message with the right tag and random fields: gets past the first checks.
      return [
        r.pick([1, 2, 3, 4, 5, 16, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 64]),
        ...Array.from({ length: r.int(6) }, () => randomValue(r, depth + 1)),
      ];
  }
}

function mutate(r: Rng, input: Uint8Array): Uint8Array {
  let b = input.slice();
  const rounds = 1 + r.int(4);
  for (let i = 0; i < rounds; i++) {
    switch (r.int(7)) {
      case 0: // flip a bit
        if (b.length > 0) b[r.int(b.length)] ^= 1 << r.int(8);
        break;
      case 1: // replace a byte with an interesting one
        if (b.length > 0) {
          b[r.int(b.length)] = r.pick([
            0,
            0x17,
            0x18,
            0x1b,
            0x1f,
            0x40,
            0x5b,
            0x7f,
            0x80,
            0x9b,
            0x9f,
            0xbf,
            0xc0,
            0xd9,
            0xff,
          ]);
        }
        break;
      case 2: // truncate
        b = b.subarray(0, r.int(b.length + 1));
        break;
      case 3: { // insert random bytes
        const at = r.int(b.length + 1);
        const ins = r.bytes(1 + r.int(8));
        const out = new Uint8Array(b.length + ins.length);
        out.set(b.subarray(0, at));
        out.set(ins, at);
        out.set(b.subarray(at), at + ins.length);
        b = out;
        break;
      }
      case 4: { // delete a range
        const at = r.int(b.length + 1);
        const n = Math.min(r.int(8), b.length - at);
        const out = new Uint8Array(b.length - n);
        out.set(b.subarray(0, at));
        out.set(b.subarray(at + n), at);
        b = out;
        break;
      }
      case 5: { // splice with another valid message
        const other = r.pick(VALID);
        const at = r.int(b.length + 1);
        const out = new Uint8Array(at + other.length);
        out.set(b.subarray(0, at));
        out.set(other, at);
        b = out;
        break;
      }
      default: // overwrite a 4- or 8-byte window with a huge length
        if (b.length > 9) {
          const at = r.int(b.length - 8);
          b[at] = r.pick([0x5a, 0x5b, 0x7a, 0x7b, 0x9a, 0x9b, 0xba, 0xbb]);
          b.fill(0xff, at + 1, at + 1 + r.pick([4, 8]));
        }
    }
  }
  return b;
}

function input(r: Rng): Uint8Array {
  switch (r.int(4)) {
    case 0:
      return r.bytes(r.int(r.int(10) === 0 ? 2048 : 64));
    case 1:
      try {
        return cborEncode(randomValue(r));
      } catch {
        return r.bytes(8);
      }
    default:
      return mutate(r, r.pick(VALID));
  }
}

/** Decode; accept only a valid message (which must round-trip) or a WireDecodeError. */
function check(name: string, codec: AnyCodec, bytes: Uint8Array, seed: number, i: number): boolean {
  let msg;
  try {
    msg = codec.decode(bytes);
  } catch (err) {
    if (err instanceof WireDecodeError) return false;
    throw new Error(
      `${name} decoder threw ${err} for case ${i} (seed ${seed}): ${
        Buffer.from(bytes).toString("hex")
      }`,
    );
  }
  assert.deepEqual(codec.decode(codec.encode(msg)), msg, `${name} round trip, seed ${seed}`);
  return true;
}

Deno.test(`fuzz: ${CASES} random and mutated inputs to every decoder`, () => {
  const r = rng(SEED);
  const before = Deno.memoryUsage();
  let accepted = 0;
  let refused = 0;
  for (let i = 0; i < CASES; i++) {
    const bytes = input(r);
    for (const [name, codec] of CODECS) {
      if (check(name, codec, bytes, SEED, i)) accepted++;
      else refused++;
    }
  }
  const after = Deno.memoryUsage();
  // Valid seeds survive some mutations; the rest must be refused, and nothing may leak.
  assert.ok(accepted > 0 && refused > CASES, `accepted ${accepted}, refused ${refused}`);
  const growth = after.rss - before.rss;
  assert.ok(growth < 512 * 1024 * 1024, `memory grew by ${growth} bytes`);
});

Deno.test("fuzz: the frame decoder under random bytes and random splits", () => {
  const r = rng(SEED ^ 0x5bd1e995);
  for (let i = 0; i < 20_000; i++) {
    const max = 1 + r.int(4096);
    const d = new FrameDecoder(max);
    const bytes = r.int(2) === 0 ? r.bytes(r.int(300)) : mutate(r, VALID[r.int(VALID.length)]);
    try {
      for (let o = 0; o < bytes.length;) {
        const n = 1 + r.int(17);
        d.push(bytes.subarray(o, o + n));
        o += n;
        for (let f = d.next(); f !== null; f = d.next()) {
          assert.ok(f.length <= max, `frame of ${f.length} > ${max}, seed ${SEED}`);
        }
      }
      d.finish();
    } catch (err) {
      if (!(err instanceof WireDecodeError)) throw err;
    }
    assert.ok(d.bufferedBytes <= bytes.length);
  }
});

Deno.test("fuzz: hand-laid object and store frames decode to exactly what was encoded", () => {
  const r = rng(SEED ^ 0x27d4eb2f);
  // Sizes around every CBOR length-header boundary, and random ones up to 256 KiB.
  const edges = [0, 1, 23, 24, 255, 256, 65535, 65536, 262144];
  for (let i = 0; i < 2_000; i++) {
    const n = r.int(2) === 0 ? r.pick(edges) + r.int(3) : r.int(262145);
    const hash = r.bytes(32);
    const full = new Uint8Array(n);
    full.set(r.bytes(Math.min(n, 4096))); // random bytes are slow to make; the rest stays zero
    const store = r.int(2) === 0;
    const head = store ? encodeStoreFrameHeader(hash, full) : encodeObjectFrameHeader(hash, full);
    const d = new FrameDecoder(objectsCodec.maxFrame);
    // Arbitrary split points, as the transport delivers them.
    const cut = r.int(head.length + 1);
    d.push(head.subarray(0, cut));
    d.push(head.subarray(cut));
    d.push(full);
    const frame = d.next();
    assert.ok(frame !== null, `frame of ${n} bytes incomplete, seed ${SEED}`);
    assert.deepEqual(
      objectsCodec.decode(frame),
      { type: store ? "store" : "object", hash, data: full },
      `seed ${SEED}, case ${i}`,
    );
    assert.equal(d.bufferedBytes, 0);
  }
});

Deno.test("fuzz: split reading of object frames agrees with the generic decoder", () => {
  const r = rng(SEED ^ 0x5bd1e995);
  const bulk = objectsCodec.bulk!;
  // Generic decode of a payload as a plain value (or the error code) for comparison.
  const generic = (payload: Uint8Array) => {
    try {
      return objectsCodec.decode(payload);
    } catch (err) {
      if (!(err instanceof WireDecodeError)) throw err;
      return `error ${err.code}`;
    }
  };
  for (let i = 0; i < 3_000; i++) {
    const n = r.pick([1000, 1024, 4096, 65535, 65536, 70000]) + r.int(3) - 1;
    const full = new Uint8Array(n);
    full.set(r.bytes(Math.min(n, 64)));
    const head = r.int(2) === 0
      ? encodeStoreFrameHeader(r.bytes(32), full)
      : encodeObjectFrameHeader(r.bytes(32), full);
    const frame = new Uint8Array(head.length + n);
    frame.set(head);
    frame.set(full, head.length);
    // Mutate the envelope (length prefix excluded: that is the framing's business) or not.
    const mutations = r.int(3) === 0 ? 0 : 1 + r.int(3);
    for (let m = 0; m < mutations; m++) frame[4 + r.int(head.length - 4)] = r.int(256);
    const d = new FrameDecoder(objectsCodec.maxFrame);
    for (let o = 0; o < frame.length;) {
      const step = 1 + r.int(r.int(2) === 0 ? 64 : 100_000);
      d.push(frame.subarray(o, o + step));
      o += step;
    }
    let got;
    try {
      const f = d.nextSplit(bulk);
      assert.ok(f !== null, `seed ${SEED}, case ${i}: incomplete`);
      if (f instanceof Uint8Array) {
        got = objectsCodec.decode(f);
      } else {
        // The body is a buffer of its own, not a view into a larger one.
        assert.equal(f.body.byteOffset, 0);
        assert.equal(f.body.byteLength, f.body.buffer.byteLength);
        got = bulk.decode(f);
      }
    } catch (err) {
      if (!(err instanceof WireDecodeError)) throw err;
      got = `error ${err.code}`;
    }
    assert.deepEqual(got, generic(frame.subarray(4)), `seed ${SEED}, case ${i}`);
  }
});

Deno.test("fuzz: invite strings", () => {
  const r = rng(SEED ^ 0x1b873593);
  const good = formatInvite(createInvite({
    clusterId: "cluster",
    addrs: [
      "/ip4/127.0.0.1/udp/1/quic-v1/p2p/12D3KooWQKRad9DtHDm2nJdvUm14vYE6tSenyh482NqHnX9qpvQp",
    ],
  }));
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ :";
  for (let i = 0; i < 20_000; i++) {
    let text: string;
    switch (r.int(3)) {
      case 0:
        text = INVITE_PREFIX +
          Array.from({ length: r.int(200) }, () => alphabet[r.int(alphabet.length)]).join("");
        break;
      case 1: {
        const chars = [...good];
        for (let k = 1 + r.int(3); k > 0; k--) {
          chars[r.int(chars.length)] = alphabet[r.int(alphabet.length)];
        }
        text = chars.join("").slice(0, r.int(2) === 0 ? chars.length : r.int(chars.length));
        break;
      }
      default:
        text = INVITE_PREFIX +
          Buffer.from(mutate(r, VALID[VALID.length - 1])).toString("base64url");
    }
    try {
      parseInvite(text);
    } catch (err) {
      if (!(err instanceof InviteError)) {
        throw new Error(`parseInvite threw ${err} (seed ${SEED}) for ${JSON.stringify(text)}`);
      }
    }
  }
});
