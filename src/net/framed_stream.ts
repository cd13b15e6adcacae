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
 *
 * Bulk senders can ask for send buffers (`sendBuffer`): messages are then copied into a
 * buffer that is handed to the transport whole, and, on QUIC, reused once the transport is
 * done with it. Without them, libp2p joins whatever queued up during a native write into a
 * fresh buffer of that size (for the objects server, ~2 MiB every few objects), and allocating
 * and collecting that memory cost the sending process more CPU than the copy itself (measured
 * with bench/transport_bench.ts, where CPU is the limit: both processes share two cores).
 */
import { concatBytes } from "../wire/mod.ts";
import {
  ConnStream,
  type MessageStream,
  type StreamCloseEvent,
  type StreamMessageEvent,
} from "./conn_stream.ts";
import type { ProtocolCodec } from "./codec.ts";
import { FrameDecoder } from "./frame.ts";

/** Tuning of one framed stream. */
export interface FramedStreamOptions {
  /** Unread bytes after which the stream is paused (default: two max frames, >= 1 MiB). */
  readHighWater?: number;
  /** Queued outgoing bytes above which write() waits for drain (default 1 MiB). */
  writeHighWater?: number;
  /**
   * Bytes of each send buffer; 0 (default) for none. With send buffers, at most two of them
   * are held per stream (one being filled, one being sent) and messages larger than one are
   * queued as they are.
   */
  sendBuffer?: number;
}

/** Idle send buffers kept for reuse by any stream of the process, at most this many bytes. */
const SPARE_SEND_BUFFER_BYTES = 16 * 1024 * 1024;
const spareSendBuffers = new Map<number, Uint8Array[]>();
let spareSendBufferBytes = 0;

function takeSendBuffer(size: number): Uint8Array {
  const spare = spareSendBuffers.get(size)?.pop();
  if (spare === undefined) return new Uint8Array(size);
  spareSendBufferBytes -= size;
  return spare;
}

function giveSendBuffer(buf: Uint8Array): void {
  if (spareSendBufferBytes + buf.length > SPARE_SEND_BUFFER_BYTES) return;
  let list = spareSendBuffers.get(buf.length);
  if (list === undefined) spareSendBuffers.set(buf.length, list = []);
  list.push(buf);
  spareSendBufferBytes += buf.length;
}

/**
 * Whether a buffer given to this stream's send() is free again at the next 'drain' after it
 * was sent while the stream was idle. True for @chainsafe/libp2p-quic streams: each native
 * write takes everything queued (alone, or copied together with earlier bytes), the native
 * side copies the bytes into quinn's send buffer before the write resolves, and 'drain' is
 * dispatched when it resolved; and for ConnStream (bulk connections). Other transports (yamux
 * over TCP) may keep referencing a sent
 * buffer after 'drain', so their send buffers are never reused.
 */
function reusesSentBuffers(stream: MessageStream): boolean {
  // A ConnStream dispatches 'drain' once every queued write resolved, and its connections
  // resolve a write once they hold no reference to its bytes.
  if (stream instanceof ConnStream) return true;
  // A maximum message size would make libp2p split one queued buffer over several writes.
  return stream.constructor.name === "QuicStream" &&
    (stream as { maxMessageSize?: number }).maxMessageSize === undefined;
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
  /** Send buffer size, 0 without send buffers. */
  readonly #sendBufferSize: number;
  readonly #reuseSent: boolean;
  /** The send buffer being filled (not yet given to the stream), and its used bytes. */
  #fill: Uint8Array | null = null;
  #fillLength = 0;
  /** The send buffer given to the stream while idle: reusable at the next 'drain'. */
  #sent: Uint8Array | null = null;

  constructor(
    readonly stream: MessageStream,
    private readonly readCodec: ProtocolCodec<In>,
    private readonly writeCodec: ProtocolCodec<Out>,
    options: FramedStreamOptions = {},
  ) {
    this.#decoder = new FrameDecoder(readCodec.maxFrame);
    this.#readHighWater = options.readHighWater ?? Math.max(1 << 20, 2 * readCodec.maxFrame);
    this.#writeHighWater = options.writeHighWater ?? 1 << 20;
    this.#sendBufferSize = Math.max(0, options.sendBuffer ?? 0);
    this.#reuseSent = this.#sendBufferSize > 0 && reusesSentBuffers(stream);
    // libp2p resets the stream when its own (paused) buffer exceeds this; keep room for one
    // frame arriving in full while we are paused.
    stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, readCodec.maxFrame + 65536);
    stream.addEventListener("message", (evt) => {
      const data = (evt as StreamMessageEvent).data as Uint8Array | Iterable<Uint8Array>;
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
    if (this.#sendBufferSize > 0) {
      // Registered after libp2p's own drain listener, so the stream is idle again here.
      stream.addEventListener("drain", () => this.#onDrain());
    }
    stream.addEventListener("close", (event) => {
      const evt = event as StreamCloseEvent;
      this.#ended = true;
      this.#fill = null;
      this.#sent = null;
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
      const bulk = this.readCodec.bulk;
      const frame = bulk === undefined ? this.#decoder.next() : this.#decoder.nextSplit(bulk);
      if (frame !== null) {
        this.#maybeResume();
        return frame instanceof Uint8Array ? this.readCodec.decode(frame) : bulk!.decode(frame);
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
    if (this.#sendBufferSize > 0) return await this.#writeBuffered([frame], signal);
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
    if (this.#sendBufferSize > 0) return await this.#writeBuffered(parts, signal);
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
    if (this.#sendBufferSize > 0) {
      this.#enqueue([frame], frame.length);
      return !this.stream.writableNeedsDrain;
    }
    return this.stream.send(frame);
  }

  /** Bytes queued for sending but not yet handed to the transport. */
  get queuedBytes(): number {
    return this.stream.writeBufferLength + this.#fillLength;
  }

  /**
   * Whether a write of `n` bytes is copied into a send buffer before write() returns, so the
   * caller may reuse the parts it passed right after.
   */
  copiesWrite(n: number): boolean {
    return this.#sendBufferSize > 0 && n <= this.#sendBufferSize;
  }

  /** Close our write side after queued bytes are sent (the remote still may send). */
  async close(): Promise<void> {
    try {
      this.#handOverFill();
      await this.stream.close();
    } catch { /* already closed or reset */ }
  }

  /** Tear the stream down now (both directions), e.g. after a protocol violation. */
  abort(err: Error): void {
    this.stream.abort(err);
  }

  /** write() with send buffers: wait for room in the buffer being filled, then queue. */
  async #writeBuffered(parts: Uint8Array[], signal?: AbortSignal): Promise<void> {
    if (this.stream.writeStatus !== "writable") {
      throw new StreamEndedError(`stream is ${this.stream.writeStatus} for writing`);
    }
    let n = 0;
    for (const p of parts) n += p.length;
    // A full buffer waits for the one being sent (the drain handler sends it), so a stream
    // holds at most two buffers and a slow reader slows the writer.
    while (
      this.#fillLength > 0 && this.#fillLength + n > this.#sendBufferSize &&
      this.stream.writableNeedsDrain
    ) {
      await waitForDrain(this.stream, signal);
    }
    if (this.stream.writeStatus !== "writable") {
      throw new StreamEndedError(`stream is ${this.stream.writeStatus} for writing`);
    }
    this.#enqueue(parts, n);
    while (this.stream.writableNeedsDrain && this.stream.writeBufferLength > this.#writeHighWater) {
      await waitForDrain(this.stream, signal);
    }
  }

  /** Queue `parts` (n bytes) behind everything queued before, copying them if they fit. */
  #enqueue(parts: Uint8Array[], n: number): void {
    if (n > this.#sendBufferSize) {
      this.#handOverFill();
      this.stream.send(parts.length === 1 ? parts[0] : concatBytes(parts));
      return;
    }
    if (this.#fill !== null && this.#fillLength + n > this.#fill.length) this.#handOverFill();
    if (this.#fill === null) {
      this.#fill = this.#reuseSent
        ? takeSendBuffer(this.#sendBufferSize)
        : new Uint8Array(this.#sendBufferSize);
      this.#fillLength = 0;
    }
    for (const p of parts) {
      this.#fill.set(p, this.#fillLength);
      this.#fillLength += p.length;
    }
    // An idle transport takes the bytes at once; a busy one gets them, with whatever more
    // arrived meanwhile, when it drains.
    if (!this.stream.writableNeedsDrain) this.#handOverFill();
  }

  /**
   * Give the buffer being filled to the stream. Sent while the stream is idle, it becomes the
   * one native write and is reused after the next drain; otherwise libp2p copies it into a
   * later write, and it is not reused (we cannot tell when that happened).
   */
  #handOverFill(): void {
    const buf = this.#fill;
    if (buf === null || this.#fillLength === 0) return;
    const idle = !this.stream.writableNeedsDrain;
    const bytes = buf.subarray(0, this.#fillLength);
    this.#fill = null;
    this.#fillLength = 0;
    this.stream.send(bytes);
    // (When busy, an earlier buffer may still be in flight: it stays tracked.)
    if (idle) this.#sent = this.#reuseSent ? buf : null;
  }

  /** The transport finished a write: reuse the buffer it took, and send what queued up. */
  #onDrain(): void {
    const done = this.#sent;
    this.#sent = null;
    if (done !== null) {
      if (this.#fill === null) this.#fill = done;
      else giveSendBuffer(done);
    }
    if (this.#fillLength > 0 && this.stream.writeStatus === "writable") {
      try {
        this.#handOverFill();
      } catch { /* the stream is closing: a waiting writer sees that */ }
    } else if (this.#fill !== null && this.#fillLength === 0) {
      // Nothing to send: an idle stream holds no buffer.
      if (this.#reuseSent) giveSendBuffer(this.#fill);
      this.#fill = null;
    }
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
export function waitForDrain(stream: MessageStream, signal?: AbortSignal): Promise<void> {
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
