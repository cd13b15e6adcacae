/** Encodings shared by every layer that puts bytes on the wire or in the Raft log. */
export { cborDecode, cborEncode } from "./cbor.ts";
export { concatBytes } from "./bytes.ts";
