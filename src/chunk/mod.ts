/**
 * chunk/: content hashing and content-defined chunking. The public face of the folder; other
 * folders import only this module.
 */
export * from "./hash.ts";
export * from "./types.ts";
export {
  appendByte,
  fingerprint,
  MOD_SHIFT,
  MOD_TABLE,
  OUT_TABLE,
  POLYNOMIAL,
  POLYNOMIAL_DEGREE,
  RollingRabin,
  WINDOW_SIZE,
} from "./rabin.ts";
export {
  chunkBuffer,
  chunkFile,
  chunkStream,
  ContentChunker,
  MAX_CHUNK_SIZE_LIMIT,
  readPieces,
  validateChunkerOptions,
} from "./chunker.ts";
export { rechunkStream, type SequentialRead } from "./rechunk.ts";
