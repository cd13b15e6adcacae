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
    if (this.#buffered < this.#expected) return null;
    const frame = this.#take(this.#expected);
    this.#expected = -1;
    return frame;
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

  /** Remove and return exactly n buffered bytes (n <= #buffered); zero-copy when possible. */
  #take(n: number): Uint8Array {
    this.#buffered -= n;
    const first = this.#chunks[0];
    if (n === 0) return new Uint8Array(0);
    if (first.length - this.#offset >= n) {
      const out = first.subarray(this.#offset, this.#offset + n);
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
