/**
 * The one CBOR codec every FileSync encoding uses (network messages, Raft messages, file index
 * commands and snapshots).
 *
 * It is cbor-x's pure-JS, no-eval build: the default "cbor-x" entry loads the cbor-extract
 * native addon, which is built against Node's V8 ABI and kills a Deno process (undefined symbol
 * v8::Isolate::GetCurrent) the first time it decodes a long string; and a decoder of untrusted
 * input should not compile code from that input (cbor-x's record readers use new Function).
 * Records, structured clones and string bundling are off, so the output is plain CBOR of
 * arrays, integers, text, bytes and booleans, and the same value always encodes the same way.
 */
import { Decoder, Encoder } from "cbor-x/index-no-eval";

const encoder = new Encoder({
  useRecords: false,
  tagUint8Array: false,
  structuredClone: false,
  bundleStrings: false,
  pack: false,
});

// copyBuffers: a decoded byte string must not be a view into the input. Views keep the whole
// input buffer alive and, worse, Deno KV's serializer writes a view's entire underlying buffer:
// Raft entries decoded from one network frame, each persisted as a view of that frame, made
// one KV commit megabytes long and stalled a follower.
const decoder = new Decoder({
  useRecords: false,
  structuredClone: false,
  bundleStrings: false,
  mapsAsObjects: true,
  copyBuffers: true,
});

/**
 * CBOR bytes of a value, in a fresh plain Uint8Array. cbor-x returns a Buffer that is a view
 * into its shared, reused encode buffer (with a cached DataView attached); copying costs little
 * next to the encoding and means a result never changes under the caller's feet.
 */
export function cborEncode(value: unknown): Uint8Array {
  return Uint8Array.from(encoder.encode(value));
}

/** The value in CBOR bytes; throws cbor-x's error on malformed input (callers wrap it). */
export function cborDecode(bytes: Uint8Array): unknown {
  return decoder.decode(bytes);
}
