/**
 * Rabin fingerprint over a sliding 64-byte window, table-driven as in restic's chunker, but
 * sized so that every step is 32-bit integer arithmetic in V8.
 *
 * A Rabin fingerprint treats a byte string as a polynomial over GF(2) (the most significant bit
 * of the first byte is the highest coefficient) and takes its remainder modulo a fixed
 * irreducible polynomial P. Sliding the window one byte is then
 *
 *     fp' = (fp · x^8 + in − out · x^(8·64)) mod P
 *
 * and because subtraction in GF(2) is XOR, both the reduction of `fp · x^8` and the removal of
 * the byte leaving the window are single table lookups: `MOD_TABLE` (indexed by the 8 bits
 * shifted above the degree) and `OUT_TABLE` (indexed by the byte leaving). The fingerprint at any
 * position therefore depends only on the 64 bytes in the window, never on what came before —
 * which is what makes chunk boundaries content-defined.
 *
 * ## The polynomial
 *
 * P = 0xFAD5AD57 with its x^31 term implied by the 32nd bit, i.e. degree 31:
 * x^31+x^30+x^29+x^28+x^27+x^25+x^23+x^22+x^20+x^18+x^16+x^15+x^13+x^11+x^10+x^8+x^6+x^4+x^2+x+1.
 * It was drawn at random: the low 31 bits of the 14th output of splitmix64 seeded with the
 * ASCII bytes of "FileSync" (0x46696c6553796e63), with the x^31 and constant terms forced on; the
 * first 13 draws were reducible. Random, because the Rabin scheme's guarantees are stated for a
 * randomly chosen irreducible polynomial, and a dense one mixes every input bit into the low
 * fingerprint bits that the boundary test reads (a sparse trinomial mixes poorly). It must never
 * change: every stored chunk list depends on it.
 *
 * Why degree 31 (restic and rabin-wasm use degree 53 in 64-bit integers):
 * - A fingerprint then has at most 31 bits, so it is always a non-negative int32. V8 keeps it in
 *   a 32-bit register in optimized code and never has to widen it to a float64 (a uint32 above
 *   2^31, as a degree-32 polynomial would produce, is not an int32), and there is no 64-bit
 *   integer type to emulate: BigInt would be two orders of magnitude slower.
 * - `fp << 8` overflows int32 exactly in the 8 bits that the reduction cancels anyway: MOD_TABLE
 *   entries carry their own copy of bit 31 so the XOR clears it (see `buildModTable`).
 * - 31 is prime, so Rabin's irreducibility test collapses to "x^(2^31) ≡ x (mod P) and P has no
 *   root in GF(2)"; and 2^31 − 1 is a Mersenne prime, so every irreducible polynomial of degree
 *   31 is also primitive (x has the maximal order 2^31 − 1). tests/unit/chunk_test.ts checks
 *   irreducibility twice, by that test and by trial division by every polynomial of degree ≤ 15.
 * - 31 bits are plenty for boundary detection, which reads only log2(avgSize) ≤ 30 of them.
 */

/** Bytes in the rolling window (as restic and casync use). */
export const WINDOW_SIZE = 64;

/** Degree of the polynomial; see the module comment for why 31. */
export const POLYNOMIAL_DEGREE = 31;

/** The Rabin polynomial, x^31 term included (as an unsigned 32-bit value). */
export const POLYNOMIAL = 0xfad5ad57;

/** Where the top byte of a fingerprint starts: fp >>> MOD_SHIFT is the MOD_TABLE index. */
export const MOD_SHIFT = POLYNOMIAL_DEGREE - 8;

/** Multiply a reduced polynomial (degree < 31) by x and reduce it mod P; uint32 arithmetic. */
function mulX(a: number): number {
  const shifted = (a << 1) >>> 0;
  // A set bit 31 means degree 31: subtract (XOR) P, which clears it.
  return (shifted & 0x80000000) !== 0 ? (shifted ^ POLYNOMIAL) >>> 0 : shifted;
}

/**
 * MOD_TABLE[t] = (t · x^31 mod P) XOR (t · x^31 truncated to 32 bits).
 *
 * After `fp << 8` the top byte t of fp sits at bits 31..38 of a 39-bit value; int32 arithmetic
 * has already dropped bits 32..38 and kept bit 31 (= t & 1). XORing the table entry adds the
 * reduction of t · x^31 and clears that remaining bit 31, so the result is fully reduced.
 */
function buildModTable(): Int32Array {
  const table = new Int32Array(256);
  for (let t = 0; t < 256; t++) {
    let r = t;
    for (let i = 0; i < POLYNOMIAL_DEGREE; i++) r = mulX(r);
    table[t] = r ^ ((t & 1) << 31);
  }
  return table;
}

/** OUT_TABLE[b] = b · x^(8·64) mod P: the byte b's contribution once it has left the window. */
function buildOutTable(): Int32Array {
  const table = new Int32Array(256);
  for (let b = 0; b < 256; b++) {
    let r = b;
    for (let i = 0; i < 8 * WINDOW_SIZE; i++) r = mulX(r);
    table[b] = r;
  }
  return table;
}

/** Reduction table for appending a byte; see `buildModTable`. */
export const MOD_TABLE: Int32Array = buildModTable();

/** Removal table for the byte leaving a full window; see `buildOutTable`. */
export const OUT_TABLE: Int32Array = buildOutTable();

/**
 * Append one byte to a fingerprint: (fp · x^8 + byte) mod P. This is the step the chunker's hot
 * loop inlines by hand; it is exported so tests and slower callers share one definition.
 */
export function appendByte(fp: number, byte: number): number {
  return ((fp << 8) | byte) ^ MOD_TABLE[fp >>> MOD_SHIFT];
}

/**
 * The Rabin fingerprint of `data[start..end)` (any length) with no window: the byte string's
 * polynomial mod P. For a 64-byte range it equals the rolling fingerprint at that range's end.
 */
export function fingerprint(data: Uint8Array, start = 0, end = data.length): number {
  let fp = 0;
  for (let i = start; i < end; i++) fp = appendByte(fp, data[i]);
  return fp;
}

/**
 * A rolling Rabin fingerprint over the last WINDOW_SIZE bytes, one byte at a time. The chunker
 * does not use this class (its loop works on whole buffers with no per-byte calls); it is the
 * plain, readable form of the same computation.
 */
export class RollingRabin {
  #window = new Uint8Array(WINDOW_SIZE);
  #pos = 0;
  #fp = 0;

  /** The fingerprint of the window (missing bytes at the start count as zeros). */
  get digest(): number {
    return this.#fp;
  }

  /** Slide the window by one byte. */
  roll(byte: number): number {
    const out = this.#window[this.#pos];
    this.#window[this.#pos] = byte;
    this.#pos = (this.#pos + 1) % WINDOW_SIZE;
    this.#fp = appendByte(this.#fp, byte) ^ OUT_TABLE[out];
    return this.#fp;
  }

  /** Empty the window. */
  reset(): void {
    this.#window.fill(0);
    this.#pos = 0;
    this.#fp = 0;
  }
}
