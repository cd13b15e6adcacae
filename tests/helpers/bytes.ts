/** Deterministic test data, and in-memory byte sources. */
import type { SequentialRead } from "../../src/chunk/mod.ts";

/** `n` pseudo-random bytes from a seed (xorshift32, one byte per step): same seed, same bytes. */
export function seededBytes(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** A sequential reader over `data` (as a file's reads) giving at most `step` bytes per call. */
export function sequentialReader(data: Uint8Array, step: number): SequentialRead {
  let pos = 0;
  return (into) => {
    if (pos >= data.length) return Promise.resolve(null);
    const n = Math.min(step, into.length, data.length - pos);
    into.set(data.subarray(pos, pos + n));
    pos += n;
    return Promise.resolve(n);
  };
}
