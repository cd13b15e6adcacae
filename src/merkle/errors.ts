/**
 * Typed errors of the Merkle layer. Callers (the store, the network protocols, the CLI) tell
 * them apart to decide what to report: malformed bytes, bytes that do not match their hash, a
 * node that is simply absent, or a bad argument from our own code.
 */
import { toHex } from "../chunk/mod.ts";
import type { Hash } from "../chunk/mod.ts";

/** Bytes that are not a well-formed node of a known format version (truncated, oversized, ...). */
export class MerkleDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MerkleDecodeError";
  }
}

/**
 * A node that is well-formed on its own but cannot be trusted: its bytes do not hash to the
 * requested hash, it is of the wrong kind or level, or it disagrees with its parent (totals,
 * counts, key order). `hash` is the node that failed, `hex` its printable form.
 */
export class MerkleIntegrityError extends Error {
  readonly hash: Hash;
  readonly hex: string;
  constructor(hash: Hash, message: string) {
    const hex = toHex(hash);
    super(`merkle node ${hex}: ${message}`);
    this.name = "MerkleIntegrityError";
    this.hash = hash;
    this.hex = hex;
  }
}

/** A node source does not hold the requested node. */
export class MerkleMissingNodeError extends Error {
  readonly hash: Hash;
  readonly hex: string;
  constructor(hash: Hash) {
    const hex = toHex(hash);
    super(`merkle node ${hex} not found`);
    this.name = "MerkleMissingNodeError";
    this.hash = hash;
    this.hex = hex;
  }
}

/** A caller handed a builder or encoder something it must not store (unsorted paths, ...). */
export class MerkleInputError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = "MerkleInputError";
  }
}
