/** Typed errors of the local store. Each names the object it is about. */
import { toHex } from "../chunk/hash.ts";

/** Stored bytes did not hash to the hash they were stored under. */
export class CorruptObjectError extends Error {
  override name = "CorruptObjectError";
  constructor(readonly hash: Uint8Array, detail: string) {
    super(`object ${toHex(hash)} is corrupt: ${detail}`);
  }
}

/** No object with this hash is held locally. */
export class MissingObjectError extends Error {
  override name = "MissingObjectError";
  constructor(readonly hash: Uint8Array) {
    super(`object ${toHex(hash)} is not in the local store`);
  }
}

/**
 * A chunk locator pointed at bytes that no longer hash to the chunk (the file changed behind
 * the locator's back, or is gone). The caller must fetch the chunk elsewhere.
 */
export class StaleLocationError extends Error {
  override name = "StaleLocationError";
  constructor(readonly hash: Uint8Array, readonly path: string, detail: string) {
    super(`chunk ${toHex(hash)} is no longer at ${path}: ${detail}`);
  }
}
