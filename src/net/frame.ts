/**
 * Length-prefixed framing: every message on a FileSync stream is a 4-byte big-endian length
 * followed by that many bytes of payload. The length is checked against the protocol's maximum
 * before a single payload byte is buffered, so a peer cannot make us allocate more than the
 * limit by announcing a huge frame.
 */
import { WireDecodeError, WireEncodeError } from "./errors.ts";

/** Bytes of the length prefix. */
export const FRAME_HEADER_LENGTH = 4;

/** The largest frame any protocol may allow (the header is a u32, and we stay well below). */
export const FRAME_HARD_LIMIT = 64 * 1024 * 1024;

/** Prefix `payload` with its length. Throws WireEncodeError above `maxFrame`. */
export function encodeFrame(payload: Uint8Array, maxFrame: number): Uint8Array {
  if (payload.length > maxFrame) {
    throw new WireEncodeError(`frame of ${payload.length} bytes exceeds the limit of ${maxFrame}`);
  }
  const out = new Uint8Array(FRAME_HEADER_LENGTH + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, FRAME_HEADER_LENGTH);
  return out;
}

/**
 * How to cut the payload of a protocol's bulk frames into a small envelope (`head`) and one
 * large byte string at its end (`body`), so that the body can be handed on as a buffer of its
 * own (see FrameDecoder.nextSplit).
 */
export interface FrameSplitter {
  /** Payload bytes bodyOffset needs to see (the longest envelope). */
  readonly headLength: number;
  /** Payloads shorter than this are never split. */
  readonly minPayload: number;
  /**
   * Offset of the body in a payload of `length` bytes whose first bytes are `head` (at most
   * headLength of them), or -1 if this payload is not one to split.
   */
  bodyOffset(head: Uint8Array, length: number): number;
}

/** A frame payload cut by a FrameSplitter: `body` is exactly one ArrayBuffer of its own. */
export interface SplitFrame {
  head: Uint8Array;
  body: Uint8Array;
}

/**
 * Reassembles frames from arbitrarily split chunks. Push chunks as they arrive, then take
 * complete frames with `next()` until it returns null.
 */
export class FrameDecoder {
  #chunks: Uint8Array[] = [];
  #offset = 0; // consumed bytes of #chunks[0]
  #buffered = 0; // unconsumed bytes across #chunks
  #expected = -1; // payload length of the frame being assembled, -1 while reading a header

  constructor(readonly maxFrame: number) {
    if (!Number.isInteger(maxFrame) || maxFrame < 1 || maxFrame > FRAME_HARD_LIMIT) {
      throw new RangeError(`maxFrame must be an integer in 1..${FRAME_HARD_LIMIT}`);
    }
  }

  /** Bytes received but not yet returned as frames. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** Append received bytes. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
  }

  /**
   * The next complete frame's payload, or null if more bytes are needed. Throws
   * WireDecodeError("frame-too-large") as soon as a header announces more than maxFrame.
   */
  next(): Uint8Array | null {
    if (this.#expected < 0) {
      if (this.#buffered < FRAME_HEADER_LENGTH) return null;
      this.#readHeader();
    }
    if (this.#buffered < this.#expected) return null;
    const frame = this.#take(this.#expected);
    this.#expected = -1;
    return frame;
  }

  /** Consume a length prefix (at least FRAME_HEADER_LENGTH bytes are buffered). */
  #readHeader(): void {
    const h = this.#take(FRAME_HEADER_LENGTH);
    const length = ((h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3]) >>> 0;
    if (length > this.maxFrame) {
      throw new WireDecodeError(
        "frame-too-large",
        `frame of ${length} bytes exceeds the limit of ${this.maxFrame}`,
      );
    }
    this.#expected = length;
  }

  /** A copy of the first n buffered bytes (n <= #buffered), without consuming them. */
  #peek(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let filled = 0;
    for (let i = 0, offset = this.#offset; filled < n; i++, offset = 0) {
      const part = this.#chunks[i].subarray(offset, offset + n - filled);
      out.set(part, filled);
      filled += part.length;
    }
    return out;
  }

  /**
   * Like next(), but a payload the splitter recognizes comes back as a SplitFrame whose body
   * is copied once, straight out of the received chunks, into a buffer of its own. The
   * alternative, next() and then copying the body out of the payload, copies it twice
   * whenever the frame spans chunks (with 256 KiB reads, a quarter of 64 KiB objects).
   */
  nextSplit(splitter: FrameSplitter): Uint8Array | SplitFrame | null {
    if (this.#expected < 0 && this.#buffered >= FRAME_HEADER_LENGTH) this.#readHeader();
    if (this.#expected < 0 || this.#buffered < this.#expected) return null;
    const length = this.#expected;
    if (length >= splitter.minPayload && length >= splitter.headLength) {
      const offset = splitter.bodyOffset(this.#peek(splitter.headLength), length);
      if (offset >= 0 && offset <= length) {
        const head = this.#take(offset);
        const body = this.#take(length - offset, true);
        this.#expected = -1;
        return { head, body };
      }
    }
    return this.next();
  }

  /** Throw WireDecodeError("truncated") if the stream ended inside a frame. */
  finish(): void {
    if (this.#buffered > 0 || this.#expected >= 0) {
      throw new WireDecodeError(
        "truncated",
        `stream ended inside a frame (${this.#buffered} bytes pending)`,
      );
    }
  }

  /**
   * Remove and return exactly n buffered bytes (n <= #buffered); zero-copy when possible,
   * unless `own`: then always in a fresh buffer of exactly n bytes.
   */
  #take(n: number, own = false): Uint8Array {
    this.#buffered -= n;
    const first = this.#chunks[0];
    if (n === 0) return new Uint8Array(0);
    if (first.length - this.#offset >= n) {
      // Not first.slice(): chunks may be Node Buffers, whose slice() is a view.
      const out = own
        ? Uint8Array.prototype.slice.call(first, this.#offset, this.#offset + n)
        : first.subarray(this.#offset, this.#offset + n);
      this.#offset += n;
      if (this.#offset === first.length) {
        this.#chunks.shift();
        this.#offset = 0;
      }
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0];
      const take = Math.min(chunk.length - this.#offset, n - filled);
      out.set(chunk.subarray(this.#offset, this.#offset + take), filled);
      filled += take;
      this.#offset += take;
      if (this.#offset === chunk.length) {
        this.#chunks.shift();
        this.#offset = 0;
      }
    }
    return out;
  }
}
