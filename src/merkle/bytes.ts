/** Canonical varints and a bounds-checked reader: the primitives of the node format. */
import { MerkleDecodeError, MerkleInputError } from "./errors.ts";

/** Largest value a uvarint may hold. */
export const MAX_UVARINT = Number.MAX_SAFE_INTEGER;

/** Bytes needed for `v` as a uvarint. */
export function uvarintLength(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** Write `v` (a safe non-negative integer) at `pos`; returns the position after it. */
export function writeUvarint(buf: Uint8Array, pos: number, v: number): number {
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new MerkleInputError(`varint value out of range: ${v}`);
  }
  while (v >= 128) {
    buf[pos++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

/** Zig-zag map of a signed integer onto the non-negative ones (0, -1, 1, -2, ...). */
export function zigzag(v: number): number {
  return v >= 0 ? 2 * v : -2 * v - 1;
}

/** Inverse of zigzag. */
export function unzigzag(z: number): number {
  return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
}

/** A cursor over node bytes; every read checks bounds and throws MerkleDecodeError. */
export class ByteReader {
  #bytes: Uint8Array;
  pos = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }

  get remaining(): number {
    return this.#bytes.length - this.pos;
  }

  #need(n: number, what: string): void {
    if (this.#bytes.length - this.pos < n) {
      throw new MerkleDecodeError(`truncated node: ${what} needs ${n} bytes at offset ${this.pos}`);
    }
  }

  u8(what: string): number {
    this.#need(1, what);
    return this.#bytes[this.pos++];
  }

  u16(what: string): number {
    this.#need(2, what);
    const v = (this.#bytes[this.pos] << 8) | this.#bytes[this.pos + 1];
    this.pos += 2;
    return v;
  }

  /** A copy of the next `n` bytes (copies, so callers may keep them after the node is gone). */
  take(n: number, what: string): Uint8Array {
    this.#need(n, what);
    const out = this.#bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A view of the next `n` bytes, for data that is only inspected. */
  view(n: number, what: string): Uint8Array {
    this.#need(n, what);
    const out = this.#bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A shortest-form LEB128 uvarint no larger than MAX_UVARINT. */
  uvarint(what: string): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      this.#need(1, what);
      const b = this.#bytes[this.pos++];
      value += (b & 127) * scale;
      if ((b & 128) === 0) {
        if (b === 0 && i > 0) throw new MerkleDecodeError(`non-canonical varint in ${what}`);
        if (value > MAX_UVARINT) throw new MerkleDecodeError(`varint too large in ${what}`);
        return value;
      }
      scale *= 128;
    }
    throw new MerkleDecodeError(`varint too long in ${what}`);
  }
}
