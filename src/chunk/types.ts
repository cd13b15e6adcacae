/** Shapes shared by the chunker and its users. */
import type { Hash } from "./hash.ts";

/** Content-defined chunk size bounds, in bytes. */
export interface ChunkerOptions {
  /** No boundary is placed before this many bytes (the rolling hash skips them). */
  minSize: number;
  /** Expected chunk size; a power of two (it sets the boundary mask). */
  avgSize: number;
  /** A boundary is forced after this many bytes. */
  maxSize: number;
}

/** Defaults as casync: small chunks keep an edit cheap on the wire. */
export const DEFAULT_CHUNKER_OPTIONS: Readonly<ChunkerOptions> = Object.freeze({
  minSize: 16 * 1024,
  avgSize: 64 * 1024,
  maxSize: 256 * 1024,
});

/** One chunk of a file or stream. */
export interface Chunk {
  /** Byte offset of the chunk in its file. */
  offset: number;
  /** Length in bytes. */
  length: number;
  /** SHA-256 of the chunk's bytes. */
  hash: Hash;
}
