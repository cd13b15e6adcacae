/**
 * A byte connection (a TLS-over-TCP bulk connection, see bulk.ts and byte_conn.ts) behind the part of the
 * libp2p v3 stream interface that FramedStream and the objects protocol use: 'message' events
 * as bytes arrive, `send()` returning false once the caller should wait for 'drain',
 * `pause()`/`resume()` for read backpressure, a half-close (`close()`) and a reset
 * (`abort()`), and the status fields those callers test.
 *
 * Reading: one read is outstanding at a time; a paused stream stops reading, so a peer that
 * keeps sending fills the buffers below and TCP flow control stops it.
 *
 * Writing: sends are queued and written in order by one loop, which dispatches 'drain' each
 * time the queue is empty; the stream needs a drain (is busy) while anything is queued.
 */

import type { Stream } from "@libp2p/interface";
import type { ByteConn } from "./byte_conn.ts";

/** Queued bytes above which send() returns false (the caller waits for 'drain'). */
const WRITE_HIGH_WATER = 1024 * 1024;

/**
 * The stream fields and methods FramedStream and the objects protocol use: a libp2p stream
 * has them all, a ConnStream has just these.
 */
export interface MessageStream extends EventTarget {
  readonly status: Stream["status"];
  readonly readStatus: Stream["readStatus"];
  readonly writeStatus: Stream["writeStatus"];
  readonly remoteWriteStatus: Stream["remoteWriteStatus"];
  readonly writableNeedsDrain: boolean;
  readonly writeBufferLength: number;
  maxReadBufferLength: number;
  send(data: Uint8Array): boolean;
  pause(): void;
  resume(): void;
  close(): Promise<void>;
  abort(err: Error): void;
}

/** The 'message' event: `data` holds the bytes read. */
export class StreamMessageEvent extends Event {
  constructor(readonly data: Uint8Array) {
    super("message");
  }
}

/** The 'close' event: `error` is set when the stream was reset or failed. */
export class StreamCloseEvent extends Event {
  constructor(readonly error?: Error) {
    super("close");
  }
}

/** A byte connection as a MessageStream. */
export class ConnStream extends EventTarget implements MessageStream {
  status: MessageStream["status"] = "open";
  readStatus: MessageStream["readStatus"] = "readable";
  writeStatus: MessageStream["writeStatus"] = "writable";
  remoteWriteStatus: MessageStream["remoteWriteStatus"] = "writable";
  writableNeedsDrain = false;
  writeBufferLength = 0;
  /** Unused here (a paused stream stops reading); kept for the interface. */
  maxReadBufferLength = 4 * 1024 * 1024;
  #queue: Uint8Array[] = [];
  #writing = false;
  #closingWrite: Promise<void> | null = null;
  #resume: (() => void) | null = null;

  constructor(private readonly conn: ByteConn) {
    super();
    // Started after the caller had a chance to add its listeners.
    queueMicrotask(() => this.#readLoop());
  }

  send(data: Uint8Array): boolean {
    if (this.writeStatus !== "writable") throw new Error(`stream is ${this.writeStatus}`);
    this.#queue.push(data);
    this.writeBufferLength += data.length;
    // Busy until the queue is written, as a libp2p QUIC stream is during a native write:
    // FramedStream then gathers what follows into its send buffer, one write when drained.
    this.writableNeedsDrain = true;
    if (!this.#writing) this.#writeLoop();
    return this.writeBufferLength <= WRITE_HIGH_WATER;
  }

  pause(): void {
    if (this.readStatus === "readable") this.readStatus = "paused";
  }

  resume(): void {
    if (this.readStatus !== "paused") return;
    this.readStatus = "readable";
    const wake = this.#resume;
    this.#resume = null;
    wake?.();
  }

  /** Close the write side once everything queued is written; the remote may still send. */
  close(): Promise<void> {
    if (this.#closingWrite === null) {
      this.writeStatus = "closing";
      this.#closingWrite = (async () => {
        while (this.#writing || this.#queue.length > 0) {
          await new Promise<void>((resolve) =>
            this.addEventListener("written", () => resolve(), { once: true })
          );
        }
        if (this.status !== "open") return;
        await this.conn.closeWrite().catch(() => {});
        this.writeStatus = "closed";
        this.#closedIfDone();
      })();
    }
    return this.#closingWrite;
  }

  /** Tear the connection down at once, both directions. */
  abort(err: Error): void {
    this.#end("aborted", err);
  }

  #end(status: "closed" | "aborted" | "reset", err?: Error): void {
    if (this.status !== "open") return;
    this.status = status;
    this.readStatus = "closed";
    this.writeStatus = "closed";
    this.#queue = [];
    this.writeBufferLength = 0;
    try {
      this.conn.close();
    } catch { /* already closed */ }
    this.#resume?.();
    this.dispatchEvent(new Event("written"));
    this.dispatchEvent(new StreamCloseEvent(err));
  }

  /** Both sides closed cleanly: the stream is done. */
  #closedIfDone(): void {
    if (this.writeStatus === "closed" && this.remoteWriteStatus === "closed") this.#end("closed");
  }

  async #readLoop(): Promise<void> {
    try {
      while (this.status === "open") {
        if (this.readStatus === "paused") {
          await new Promise<void>((resolve) => this.#resume = resolve);
          continue;
        }
        const chunk = await this.conn.readChunk();
        if (this.status !== "open") return;
        if (chunk === null) {
          this.readStatus = "closed";
          this.remoteWriteStatus = "closed";
          this.dispatchEvent(new Event("remoteCloseWrite"));
          this.#closedIfDone();
          return;
        }
        this.dispatchEvent(new StreamMessageEvent(chunk));
      }
    } catch (e) {
      this.#end("reset", e as Error);
    }
  }

  async #writeLoop(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && this.status === "open") {
        const data = this.#queue.shift()!;
        await this.conn.write(data);
        this.writeBufferLength -= data.length;
      }
    } catch (e) {
      this.#writing = false;
      this.#end("reset", e as Error);
      return;
    }
    this.#writing = false;
    this.writableNeedsDrain = false;
    this.dispatchEvent(new Event("written"));
    if (this.status === "open") this.dispatchEvent(new Event("drain"));
  }
}
