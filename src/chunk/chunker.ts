/**
 * Content-defined chunking: cut a byte stream where the Rabin fingerprint of the last 64 bytes
 * matches a pattern, so that an edit moves only the boundaries near it and every other chunk
 * keeps its hash (and is not sent again).
 *
 * Rules, for a chunk starting at stream offset s (lengths count bytes from s):
 * - no boundary before `minSize` bytes; the fingerprint is not even computed for the bytes
 *   before s + minSize − 64, because only the 64 bytes before a candidate boundary decide it
 *   (restic and casync do the same). This skips about a fifth of all bytes with the defaults;
 * - from length `minSize` on, the chunk ends after the first byte whose window fingerprint fp
 *   has `(fp & mask) === magic`, with mask = avgSize − 1;
 * - at `maxSize` bytes the chunk ends regardless.
 *
 * A boundary is thus a function of the 64 bytes before it and of where the chunk started, never
 * of how the input was split into reads. With the mask from avgSize the mean chunk on random
 * data is about minSize + avgSize (capped by maxSize), as in restic.
 *
 * `magic` is a fixed non-zero pattern (masked to the mask's width) rather than 0: the
 * fingerprint of an all-zero window is 0, so runs of zeros (sparse files, disk images) make
 * maxSize chunks instead of a flood of minSize ones.
 */
import { type Hash, Sha256, sha256 } from "./hash.ts";
import { type Chunk, type ChunkerOptions, DEFAULT_CHUNKER_OPTIONS } from "./types.ts";
import { MOD_SHIFT, MOD_TABLE, OUT_TABLE, WINDOW_SIZE } from "./rabin.ts";

/** Largest allowed maxSize: keeps lengths, masks and patterns within non-negative int32. */
export const MAX_CHUNK_SIZE_LIMIT = 1 << 30;

/**
 * Bytes per lane block in the two-lane hot loop (see findBoundary). Large enough that the
 * second lane's 64-byte warm-up is noise, small enough that the work lane B wastes when lane A
 * finds the boundary stays small; 4 KiB measured best here. It does not affect results.
 */
const LANE_BLOCK = 4096;

/**
 * Boundary pattern before masking. Any fixed value with bit 0 set works (it stays non-zero at
 * every mask width); it must never change.
 */
const MAGIC = 0x3a5c_9e1b;

/**
 * Fill in defaults and check chunk size bounds.
 * @throws {TypeError} when an option is not a number
 * @throws {RangeError} when sizes are not integers, avgSize is not a power of two, minSize <
 *   64 (the window), minSize > avgSize, avgSize > maxSize, or maxSize > 2^30
 */
export function validateChunkerOptions(opts: Partial<ChunkerOptions> = {}): ChunkerOptions {
  if (opts === null || typeof opts !== "object") {
    throw new TypeError("chunker options must be an object");
  }
  const pick = (name: keyof ChunkerOptions): number => {
    const value: unknown = opts[name] ?? DEFAULT_CHUNKER_OPTIONS[name];
    if (typeof value !== "number") {
      throw new TypeError(`chunker ${name} must be a number, got ${typeof value}`);
    }
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new RangeError(`chunker ${name} must be a positive integer, got ${value}`);
    }
    return value;
  };
  const minSize = pick("minSize");
  const avgSize = pick("avgSize");
  const maxSize = pick("maxSize");
  if (minSize < WINDOW_SIZE) {
    throw new RangeError(
      `chunker minSize (${minSize}) must be at least the ${WINDOW_SIZE}-byte rolling window`,
    );
  }
  if (2 ** Math.round(Math.log2(avgSize)) !== avgSize) {
    throw new RangeError(`chunker avgSize (${avgSize}) must be a power of two`);
  }
  if (minSize > avgSize) {
    throw new RangeError(`chunker minSize (${minSize}) must not exceed avgSize (${avgSize})`);
  }
  if (avgSize > maxSize) {
    throw new RangeError(`chunker avgSize (${avgSize}) must not exceed maxSize (${maxSize})`);
  }
  if (maxSize > MAX_CHUNK_SIZE_LIMIT) {
    throw new RangeError(
      `chunker maxSize (${maxSize}) must not exceed ${MAX_CHUNK_SIZE_LIMIT} bytes`,
    );
  }
  return { minSize, avgSize, maxSize };
}

/**
 * The boundary finder: a synchronous state machine fed with consecutive pieces of one stream.
 * It keeps only the current chunk's length, the fingerprint and a copy of the last 64 bytes (for
 * a window that straddles two pieces); it never holds on to the caller's buffers and allocates
 * nothing while scanning.
 *
 * Low-level use (no allocation): call `findBoundary(piece, pos)` until it returns -1, each
 * result being the end (exclusive) of a chunk inside `piece`; at the end of the stream,
 * `finish()` returns the length of the last, partial chunk.
 */
export class ContentChunker {
  /** The validated, complete options in use. */
  readonly options: Readonly<ChunkerOptions>;
  /** avgSize − 1: the fingerprint bits a boundary looks at. */
  readonly mask: number;
  /** A boundary is where `(fingerprint & mask) === magic`. */
  readonly magic: number;

  readonly #minSize: number;
  readonly #maxSize: number;
  /** Bytes of the current chunk consumed so far. */
  #len = 0;
  /** Fingerprint of the window ending at the last consumed byte (0 while still skipping). */
  #fp = 0;
  /** The last WINDOW_SIZE rolled bytes, oldest first; zeros stand for "not rolled yet". */
  readonly #window = new Uint8Array(WINDOW_SIZE);

  constructor(opts: Partial<ChunkerOptions> = {}) {
    this.options = Object.freeze(validateChunkerOptions(opts));
    this.#minSize = this.options.minSize;
    this.#maxSize = this.options.maxSize;
    this.mask = this.options.avgSize - 1;
    this.magic = MAGIC & this.mask;
  }

  /** Bytes of the current, not yet completed chunk. */
  get pending(): number {
    return this.#len;
  }

  /**
   * Consume `data[start..end)` (the next bytes of the stream) up to the next boundary.
   * Returns the index in `data` just past the boundary — the completed chunk is the pending
   * bytes from earlier calls plus `data[start..result)` — or -1 if no chunk ends within the
   * range, which is then entirely consumed.
   */
  findBoundary(data: Uint8Array, start = 0, end: number = data.length): number {
    if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end)) {
      throw new RangeError(`bad range [${start}, ${end})`);
    }
    if (end > data.length) throw new RangeError(`range end ${end} beyond ${data.length} bytes`);
    const minSize = this.#minSize;
    let i = start;
    let len = this.#len;

    // 1. Skip what cannot influence a boundary: up to 64 bytes before minSize.
    const rollFrom = minSize - WINDOW_SIZE;
    if (len < rollFrom) {
      const skip = rollFrom - len;
      if (end - i <= skip) {
        this.#len = len + (end - i);
        return -1;
      }
      i += skip;
      len = rollFrom;
    }

    const mask = this.mask;
    const magic = this.magic;
    const maxSize = this.#maxSize;
    const window = this.#window;
    let fp = this.#fp;

    // 2. Head: the first 64 positions rolled in this call take their outgoing byte from the
    //    saved window (or zeros right after the skip). At most 64 bytes, so the general checks
    //    cost nothing; they also cover the ramp from minSize − 64 to minSize.
    const regionStart = i;
    const headEnd = Math.min(end, i + WINDOW_SIZE);
    for (; i < headEnd; i++) {
      fp = ((fp << 8) | data[i]) ^ OUT_TABLE[window[i - regionStart]] ^ MOD_TABLE[fp >>> MOD_SHIFT];
      len++;
      if ((len >= minSize && (fp & mask) === magic) || len >= maxSize) return this.#cut(i + 1);
    }

    // 3. Body: the hot loop, in a function of its own (see rollBody).
    if (i < end) {
      const limit = Math.min(end, i + (maxSize - len));
      const result = rollBody(data, i, limit, fp, mask, magic);
      if (result >= 0) return this.#cut(result);
      fp = -1 - result;
      len += limit - i;
      i = limit;
      if (len >= maxSize) return this.#cut(i);
    }

    // 4. The range ended inside a chunk: remember the state and the last 64 rolled bytes.
    this.#len = len;
    this.#fp = fp;
    const rolled = end - regionStart;
    if (rolled >= WINDOW_SIZE) {
      for (let j = 0, k = end - WINDOW_SIZE; j < WINDOW_SIZE; j++, k++) window[j] = data[k];
    } else {
      window.copyWithin(0, rolled);
      for (let j = WINDOW_SIZE - rolled, k = regionStart; j < WINDOW_SIZE; j++, k++) {
        window[j] = data[k];
      }
    }
    return -1;
  }

  /**
   * Consume a whole piece of the stream; returns the lengths of the chunks completed within it
   * (the first may have begun in earlier pieces). Allocates one small array per call.
   */
  push(data: Uint8Array): number[] {
    const lengths: number[] = [];
    let carried = this.#len;
    let pos = 0;
    while (pos < data.length) {
      const cut = this.findBoundary(data, pos);
      if (cut < 0) break;
      lengths.push(carried + cut - pos);
      carried = 0;
      pos = cut;
    }
    return lengths;
  }

  /** End of stream: the length of the final, partial chunk (0 if none); then reset. */
  finish(): number {
    const last = this.#len;
    this.#cut(0);
    return last;
  }

  /** Forget all state, ready for a new stream. */
  reset(): void {
    this.#cut(0);
  }

  /** Start a new chunk; returns `at` for the caller's convenience. */
  #cut(at: number): number {
    this.#len = 0;
    this.#fp = 0;
    this.#window.fill(0);
    return at;
  }
}

/**
 * The hot loop: roll `data[from..to)` into the fingerprint `fp` (of the window ending at
 * from − 1), looking for the first boundary. The caller guarantees that the chunk is already at
 * least minSize long at `from` and that the 64 bytes before `from` are in `data`, so the byte
 * leaving the window is always `data[i − 64]`. Each byte costs two byte loads, two table loads
 * and a few int32 operations, with no calls and no allocation.
 *
 * Returns the index just past the first boundary (≥ 0), or, when there is none, −1 − fp with fp
 * the fingerprint at `to` − 1 (always < 0 as fp ≥ 0): two results without allocating.
 *
 * Why two lanes: each fingerprint depends on the previous one through a table load, a chain of
 * about six cycles per byte that leaves most of the CPU idle. Since a fingerprint depends only
 * on its window, a second lane can start LANE_BLOCK bytes ahead (after rolling in the 64 bytes
 * before its start) and the two independent chains run interleaved, about 1.3x faster here.
 * The first boundary in stream order still wins: a hit in lane A is final at once; a hit in lane
 * B only once lane A has finished its block without one. After a pair of blocks without a hit,
 * lane A carries on from lane B's state. Kept out of findBoundary so that V8 optimizes this one
 * loop nest on its own, which also shortens the warm-up.
 */
function rollBody(
  data: Uint8Array,
  from: number,
  to: number,
  fp: number,
  mask: number,
  magic: number,
): number {
  const modTable = MOD_TABLE;
  const outTable = OUT_TABLE;
  let i = from;
  while (to - i >= 2 * LANE_BLOCK) {
    const blockEnd = i + LANE_BLOCK;
    let j = blockEnd;
    let fb = 0;
    for (let k = j - WINDOW_SIZE; k < j; k++) {
      fb = ((fb << 8) | data[k]) ^ modTable[fb >>> MOD_SHIFT];
    }
    let hitB = -1;
    for (; i < blockEnd; i++, j++) {
      fp = ((fp << 8) | data[i]) ^ outTable[data[i - WINDOW_SIZE]] ^ modTable[fp >>> MOD_SHIFT];
      fb = ((fb << 8) | data[j]) ^ outTable[data[j - WINDOW_SIZE]] ^ modTable[fb >>> MOD_SHIFT];
      if ((fp & mask) === magic) return i + 1;
      if ((fb & mask) === magic) {
        hitB = j + 1;
        i++;
        break;
      }
    }
    if (hitB >= 0) {
      for (; i < blockEnd; i++) {
        fp = ((fp << 8) | data[i]) ^ outTable[data[i - WINDOW_SIZE]] ^ modTable[fp >>> MOD_SHIFT];
        if ((fp & mask) === magic) return i + 1;
      }
      return hitB;
    }
    i = j;
    fp = fb;
  }
  for (; i < to; i++) {
    fp = ((fp << 8) | data[i]) ^ outTable[data[i - WINDOW_SIZE]] ^ modTable[fp >>> MOD_SHIFT];
    if ((fp & mask) === magic) return i + 1;
  }
  return -1 - fp;
}

/**
 * Chunk a stream, hashing each chunk with SHA-256 as its bytes go by (a chunk may span many
 * reads). Nothing is buffered: each piece is consumed completely before the next is pulled, so
 * memory is one piece whatever the stream's size, and a source may even reuse its buffer.
 * An empty stream yields no chunk; a stream shorter than minSize yields one.
 * @throws {TypeError} if the source yields something other than a Uint8Array
 */
export async function* chunkStream(
  source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
  opts: Partial<ChunkerOptions> = {},
): AsyncGenerator<Chunk> {
  const chunker = new ContentChunker(opts);
  let offset = 0; // stream offset where the current chunk starts
  let length = 0; // bytes of the current chunk so far
  let hasher = new Sha256();
  for await (const piece of source) {
    if (!(piece instanceof Uint8Array)) {
      throw new TypeError(`chunkStream: source yielded ${typeof piece}, not a Uint8Array`);
    }
    let pos = 0;
    while (pos < piece.length) {
      const cut = chunker.findBoundary(piece, pos);
      if (cut < 0) {
        hasher.update(pos === 0 ? piece : piece.subarray(pos));
        length += piece.length - pos;
        break;
      }
      hasher.update(piece.subarray(pos, cut));
      length += cut - pos;
      const hash: Hash = hasher.digest();
      hasher = new Sha256();
      yield { offset, length, hash };
      offset += length;
      length = 0;
      pos = cut;
    }
  }
  chunker.finish();
  if (length > 0) yield { offset, length, hash: hasher.digest() };
}

/**
 * Chunk a file, reading it `readSize` bytes at a time into one reused buffer, so memory stays
 * flat for any file size. The file is closed when the generator ends, fails or is abandoned.
 * @throws {RangeError} for a bad readSize or options; Deno's errors for an unreadable file
 */
export async function* chunkFile(
  path: string,
  opts: Partial<ChunkerOptions> = {},
  readSize = 1 << 20,
): AsyncGenerator<Chunk> {
  const options = validateChunkerOptions(opts);
  if (!Number.isSafeInteger(readSize) || readSize < 1) {
    throw new RangeError(`readSize must be a positive integer, got ${readSize}`);
  }
  const file = await Deno.open(path, { read: true });
  try {
    yield* chunkStream(readPieces(file, new Uint8Array(readSize)), options);
  } finally {
    file.close();
  }
}

/**
 * Successive reads of an open file into the same buffer (safe: chunkStream consumes each piece
 * before it pulls the next). For callers that open the file themselves, e.g. to stat it.
 */
export async function* readPieces(
  file: Deno.FsFile,
  buffer: Uint8Array,
): AsyncGenerator<Uint8Array> {
  for (;;) {
    const n = await file.read(buffer);
    if (n === null) return;
    if (n > 0) yield buffer.subarray(0, n);
  }
}

/** Chunk and hash a buffer that is already in memory. */
export function chunkBuffer(data: Uint8Array, opts: Partial<ChunkerOptions> = {}): Chunk[] {
  const chunker = new ContentChunker(opts);
  const chunks: Chunk[] = [];
  let pos = 0;
  while (pos < data.length) {
    let cut = chunker.findBoundary(data, pos);
    if (cut < 0) cut = data.length;
    chunks.push({ offset: pos, length: cut - pos, hash: sha256(data.subarray(pos, cut)) });
    pos = cut;
  }
  return chunks;
}
