/**
 * Typed, framed messages over one libp2p v3 stream.
 *
 * libp2p v3 streams are message based: bytes arrive as 'message' events (in whatever pieces
 * the transport produced) and `send()` returns false when the caller should wait for 'drain'.
 * This wrapper turns that into `read()` of whole decoded messages and `write()` that applies
 * backpressure, with bounded memory on both sides:
 *  - reading: once more than `readHighWater` bytes are buffered but unread, the stream is
 *    paused; libp2p then buffers up to `maxReadBufferLength` more and resets the stream if a
 *    peer keeps sending regardless, so a flooding peer costs a bounded amount of memory;
 *  - writing: `write()` resolves once the stream's queue is below `writeHighWater`, so a slow
 *    reader slows the writer instead of growing our queue.
 */
import { concatBytes } from "../wire/mod.ts";
import type { Stream } from "@libp2p/interface";
import type { ProtocolCodec } from "./codec.ts";
import { FrameDecoder } from "./frame.ts";

/** Tuning of one framed stream. */
export interface FramedStreamOptions {
  /** Unread bytes after which the stream is paused (default: two max frames, >= 1 MiB). */
  readHighWater?: number;
  /** Queued outgoing bytes above which write() waits for drain (default 1 MiB). */
  writeHighWater?: number;
}

/** The stream was closed or reset before the expected message arrived. */
export class StreamEndedError extends Error {
  override name = "StreamEndedError";
}

/**
 * A bidirectional typed channel: reads `In` messages, writes `Out` messages. One reader at a
 * time (protocols here are request/response or one-way, so that is all they need).
 */
export class FramedStream<In extends { type: string }, Out extends { type: string }> {
  readonly #decoder: FrameDecoder;
  readonly #readHighWater: number;
  readonly #writeHighWater: number;
  #ended = false; // remote closed its write side: no more frames after the buffered ones
  #error: Error | null = null; // stream closed abnormally
  #wake: (() => void) | null = null;
  #paused = false;

  constructor(
    readonly stream: Stream,
    private readonly readCodec: ProtocolCodec<In>,
    private readonly writeCodec: ProtocolCodec<Out>,
    options: FramedStreamOptions = {},
  ) {
    this.#decoder = new FrameDecoder(readCodec.maxFrame);
    this.#readHighWater = options.readHighWater ?? Math.max(1 << 20, 2 * readCodec.maxFrame);
    this.#writeHighWater = options.writeHighWater ?? 1 << 20;
    // libp2p resets the stream when its own (paused) buffer exceeds this; keep room for one
    // frame arriving in full while we are paused.
    stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, readCodec.maxFrame + 65536);
    stream.addEventListener("message", (evt) => {
      const data = evt.data;
      if (data instanceof Uint8Array) this.#decoder.push(data);
      else for (const buf of data) this.#decoder.push(buf);
      if (!this.#paused && this.#decoder.bufferedBytes > this.#readHighWater) {
        this.#paused = true;
        try {
          stream.pause();
        } catch { /* closing: nothing more will arrive anyway */ }
      }
      this.#notify();
    });
    stream.addEventListener("remoteCloseWrite", () => {
      this.#ended = true;
      this.#notify();
    });
    stream.addEventListener("close", (evt) => {
      this.#ended = true;
      if (evt.error !== undefined && this.#error === null) this.#error = evt.error;
      this.#notify();
    });
    if (stream.status !== "open" || stream.readStatus === "closed") this.#ended = true;
  }

  /**
   * The next message, or null when the remote closed its side cleanly after a whole frame.
   * Throws WireDecodeError for bad bytes (the caller should abort the stream), and
   * StreamEndedError if the stream was reset or ended inside a frame.
   */
  async read(signal?: AbortSignal): Promise<In | null> {
    while (true) {
      const frame = this.#decoder.next();
      if (frame !== null) {
        this.#maybeResume();
        return this.readCodec.decode(frame);
      }
      if (this.#paused) {
        // Bytes may still wait in libp2p's buffer behind our pause (even after the remote
        // closed); take them before deciding anything.
        this.#paused = false;
        try {
          this.stream.resume();
          continue;
        } catch { /* the readable end is closed: nothing is buffered there */ }
      }
      if (this.#ended) {
        if (this.#error !== null) {
          throw new StreamEndedError(`stream closed: ${this.#error.message}`);
        }
        this.#decoder.finish(); // WireDecodeError("truncated") if it ended inside a frame
        return null;
      }
      await this.#waitForData(signal);
    }
  }

  /** Like read(), but a clean end of stream is an error too (the message was required). */
  async expect(what: string, signal?: AbortSignal): Promise<In> {
    const msg = await this.read(signal);
    if (msg === null) throw new StreamEndedError(`stream ended while waiting for ${what}`);
    return msg;
  }

  /** Queue a message; resolves when our outgoing queue is below the high-water mark. */
  write(msg: Out, signal?: AbortSignal): Promise<void> {
    return this.writeEncoded(this.writeCodec.encodeFrame(msg), signal);
  }

  /**
   * Queue a frame encoded elsewhere (must be a valid frame of this protocol, e.g. from
   * encodeObjectFrame); resolves when our outgoing queue is below the high-water mark.
   */
  async writeEncoded(frame: Uint8Array, signal?: AbortSignal): Promise<void> {
    this.writeFrame(frame);
    while (this.stream.writableNeedsDrain && this.stream.writeBufferLength > this.#writeHighWater) {
      await waitForDrain(this.stream, signal);
    }
  }

  /**
   * Queue one frame given as consecutive parts (e.g. an envelope and a payload buffer); the
   * parts are not copied here. Resolves when our queue is below the high-water mark.
   */
  async writeParts(parts: Uint8Array[], signal?: AbortSignal): Promise<void> {
    if (this.stream.writeStatus !== "writable") {
      throw new StreamEndedError(`stream is ${this.stream.writeStatus} for writing`);
    }
    // While the transport is busy, send() only appends to libp2p's queue (which is
    // concatenated into one native write on drain). When it is idle, each send() would be its
    // own native write, so join the parts into one buffer first.
    if (this.stream.writableNeedsDrain) {
      for (const p of parts) this.stream.send(p);
    } else {
      this.stream.send(concatBytes(parts));
    }
    while (this.stream.writableNeedsDrain && this.stream.writeBufferLength > this.#writeHighWater) {
      await waitForDrain(this.stream, signal);
    }
  }

  /**
   * Queue an already-encoded frame without waiting. Returns the stream's own verdict (false:
   * its transport is busy and bytes are queued). Throws StreamEndedError if the stream can
   * no longer be written.
   */
  writeFrame(frame: Uint8Array): boolean {
    if (this.stream.writeStatus !== "writable") {
      throw new StreamEndedError(`stream is ${this.stream.writeStatus} for writing`);
    }
    return this.stream.send(frame);
  }

  /** Bytes queued for sending but not yet handed to the transport. */
  get queuedBytes(): number {
    return this.stream.writeBufferLength;
  }

  /** Close our write side after queued bytes are sent (the remote still may send). */
  async close(): Promise<void> {
    try {
      await this.stream.close();
    } catch { /* already closed or reset */ }
  }

  /** Tear the stream down now (both directions), e.g. after a protocol violation. */
  abort(err: Error): void {
    this.stream.abort(err);
  }

  #maybeResume(): void {
    if (this.#paused && this.#decoder.bufferedBytes <= this.#readHighWater / 2) {
      this.#paused = false;
      try {
        this.stream.resume();
      } catch { /* stream closing */ }
    }
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  #waitForData(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.#wake = null;
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#wake = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
    });
  }
}

/**
 * Wait for the stream's next 'drain' event. Not `stream.onDrain()`: in @libp2p/utils 7.4.1 its
 * promise is created once and never reset, so after the first drain it resolves at once, and a
 * "wait until drained" loop spins on microtasks forever, starving the very I/O it waits for.
 */
export function waitForDrain(stream: Stream, signal?: AbortSignal): Promise<void> {
  if (!stream.writableNeedsDrain) return Promise.resolve();
  if (stream.status !== "open") {
    return Promise.reject(new StreamEndedError(`stream is ${stream.status}`));
  }
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const cleanup = () => {
      stream.removeEventListener("drain", onDrain);
      stream.removeEventListener("close", onClose);
      signal?.removeEventListener("abort", onAbort);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      reject(new StreamEndedError("stream closed while writing"));
    };
    const onAbort = () => {
      cleanup();
      reject(signal?.reason);
    };
    stream.addEventListener("drain", onDrain);
    stream.addEventListener("close", onClose);
    signal?.addEventListener("abort", onAbort);
  });
}
