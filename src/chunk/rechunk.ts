/**
 * Re-chunking an edited file, guided by its previous chunk list: the same chunks as
 * `chunkStream` would produce, several times faster when most of the file is unchanged.
 *
 * Why it is exact: a chunk boundary is a function of where the chunk starts and of the bytes
 * from there to the cut (the rolling window never reaches before the chunk's start, since
 * minSize ≥ the window). So at a boundary `pos` of the new content, if the bytes at
 * [pos, pos + L) equal an old chunk of length L that was cut by the boundary rule (any chunk
 * but the old last one, which the end of the stream cut), the full chunker would cut at
 * pos + L as well. Equality is checked by SHA-256, which the chunk needs anyway.
 *
 * So instead of rolling the fingerprint over every byte (Rabin plus SHA-256, about 500 MB/s
 * here), the unchanged stretches cost only SHA-256 (about 1.8 GB/s): starting at offset 0
 * with the old first chunk as the guess, each guess that hashes equal is a chunk and the next
 * old chunk is the next guess. A guess that fails switches to the real chunker from that
 * boundary, chunk by chunk, until a chunk it cuts is one of the old chunks (after an insert or
 * delete, usually the second chunk past the edit): from its end the next old chunk is guessed
 * again. Nothing here trusts the old list: a wrong guess costs one chunk's hashing.
 */
import { hashEquals, hashKey, sha256 } from "./hash.ts";
import { ContentChunker, validateChunkerOptions } from "./chunker.ts";
import type { Chunk, ChunkerOptions } from "./types.ts";

/** Reads the next bytes of a stream into `into`; null at the end (Deno.FsFile.read fits). */
export type SequentialRead = (into: Uint8Array) => Promise<number | null>;

/** Bytes read ahead at least: large reads amortize each read's cost. */
const MIN_BUFFER_BYTES = 4 << 20;

/**
 * Bytes of a stream from the current chunk's start on, contiguous in one buffer (a chunk is
 * hashed in one call and the chunker needs the 64 bytes before a position in the same array).
 */
class ReadWindow {
  readonly buffer: Uint8Array;
  /** Stream offset of buffer[0]. */
  start = 0;
  /** Bytes held. */
  length = 0;
  ended = false;

  constructor(private readonly read: SequentialRead, capacity: number) {
    this.buffer = new Uint8Array(capacity);
  }

  /** Stream offset just past the last byte held. */
  get end(): number {
    return this.start + this.length;
  }

  /**
   * Hold at least the bytes [from, to) (fewer if the stream ends first), dropping those
   * before `from`. `to - from` must not exceed half the capacity.
   */
  async hold(from: number, to: number): Promise<void> {
    if (this.end >= to || this.ended) return;
    // Compact once less than half the buffer is free, so reads stay large.
    const drop = from - this.start;
    if (drop > 0 && this.buffer.length - this.length < this.buffer.length / 2) {
      this.buffer.copyWithin(0, drop, this.length);
      this.start = from;
      this.length -= drop;
    }
    while (this.end < to && !this.ended) {
      const n = await this.read(this.buffer.subarray(this.length));
      if (n === null) this.ended = true;
      else this.length += n;
    }
  }

  /** The held bytes [from, to) (a view, valid until the next hold). */
  view(from: number, to: number): Uint8Array {
    return this.buffer.subarray(from - this.start, to - this.start);
  }
}

/**
 * Chunk the stream read by `read`, given the chunks of a previous version of the same content
 * (in order, from offset 0) cut with the same options. Yields exactly what `chunkStream`
 * yields for the same bytes and options; `previous` only decides how much work that takes.
 */
export async function* rechunkStream(
  read: SequentialRead,
  previous: readonly Chunk[],
  opts: Partial<ChunkerOptions> = {},
): AsyncGenerator<Chunk> {
  const options = validateChunkerOptions(opts);
  const chunker = new ContentChunker(options);
  const window = new ReadWindow(read, Math.max(MIN_BUFFER_BYTES, 4 * options.maxSize));
  const byHash = new Map<string, number>();
  previous.forEach((c, i) => byHash.set(hashKey(c.hash), i));
  let pos = 0;
  let guess = previous.length > 0 ? 0 : -1;
  for (;;) {
    // The chunker cuts within maxSize bytes, so that much ahead is always enough.
    await window.hold(pos, pos + options.maxSize);
    const available = window.end - pos;
    if (available === 0) return;
    if (guess >= 0 && guess < previous.length) {
      const old = previous[guess];
      // The old last chunk was cut by the end of the stream: it only matches at the end. A
      // length these options could not cut is no guess (a list made with other options).
      const fits = guess < previous.length - 1
        ? old.length <= available && old.length >= options.minSize &&
          old.length <= options.maxSize
        : old.length === available && window.ended && old.length <= options.maxSize;
      if (fits) {
        const hash = sha256(window.view(pos, pos + old.length));
        if (hashEquals(hash, old.hash)) {
          yield { offset: pos, length: old.length, hash };
          pos += old.length;
          guess++;
          continue;
        }
      }
    }
    // One chunk the full way, from this boundary.
    chunker.reset();
    const from = pos - window.start;
    const cut = chunker.findBoundary(window.buffer, from, window.length);
    // No boundary in maxSize bytes is impossible, so no cut means the stream ended.
    const end = cut < 0 ? window.end : window.start + cut;
    const hash = sha256(window.view(pos, end));
    yield { offset: pos, length: end - pos, hash };
    pos = end;
    const match = byHash.get(hashKey(hash));
    guess = match === undefined ? -1 : match + 1;
  }
}
