/**
 * Idle objects-protocol streams kept open per peer, so that consecutive fetches reuse them.
 *
 * Opening a stream costs a protocol negotiation round trip, and a sync of many small files
 * makes two fetches per file: with a stream per fetch, thousands of short-lived streams were
 * opened and reset, the server's per-connection stream limit was hit while resets were still
 * in flight, and fetches failed with "Unexpected EOF". A stream whose every request was
 * answered is in a clean state and can carry the next fetch's requests as they are.
 *
 * A pooled stream may have been closed by the peer meanwhile (it drops streams idle for long,
 * or restarted); the first use then fails, and the caller retries on a fresh stream without
 * blaming the peer.
 */
import type { ProtocolCodec } from "./codec.ts";
import type { MessageStream } from "./conn_stream.ts";
import { FramedStream } from "./framed_stream.ts";
import type { Host } from "./host.ts";

/** A stream lent out by the pool. */
export interface PooledStream<M extends { type: string }> {
  fs: FramedStream<M, M>;
  /** True if the stream carried an earlier fetch (and may have been closed by the peer since). */
  reused: boolean;
}

/** Options of a stream pool. */
export interface StreamPoolOptions {
  /** Idle streams kept per peer (default 8). */
  maxIdlePerPeer?: number;
  /** An idle stream older than this is closed, ms (default 30,000: below the server's 60 s). */
  idleMs?: number;
  /** Unread bytes buffered per stream before it is paused. */
  readHighWater?: number;
  /**
   * A faster way to a peer than a libp2p stream (a bulk connection, see bulk.ts); null when
   * there is none now, and a libp2p stream is opened instead.
   */
  dial?: (peer: string, signal?: AbortSignal) => Promise<MessageStream | null>;
}

interface Idle<M extends { type: string }> {
  fs: FramedStream<M, M>;
  since: number;
}

/** Streams of one protocol, opened on demand and kept for reuse while idle. */
export class StreamPool<M extends { type: string }> {
  readonly #idle = new Map<string, Idle<M>[]>();
  readonly #maxIdle: number;
  readonly #idleMs: number;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  constructor(
    private readonly host: Host,
    private readonly protocol: string,
    private readonly codec: ProtocolCodec<M>,
    private readonly opts: StreamPoolOptions = {},
  ) {
    this.#maxIdle = opts.maxIdlePerPeer ?? 8;
    this.#idleMs = opts.idleMs ?? 30_000;
  }

  /** An idle stream to `peer` if one is open, else a new one. */
  async acquire(peer: string, signal?: AbortSignal): Promise<PooledStream<M>> {
    const idle = this.#idle.get(peer);
    while (idle && idle.length > 0) {
      const { fs } = idle.pop()!;
      if (fs.stream.status === "open" && fs.stream.writeStatus === "writable") {
        return { fs, reused: true };
      }
      fs.abort(new Error("closed while idle"));
    }
    const stream = (await this.opts.dial?.(peer, signal)) ??
      await this.host.openStream(peer, this.protocol, { signal });
    const fs = new FramedStream<M, M>(stream, this.codec, this.codec, {
      readHighWater: this.opts.readHighWater,
    });
    return { fs, reused: false };
  }

  /**
   * Give back a stream whose every request was answered. It is kept for the next fetch, or
   * reset when the pool is full or closed (reset, not a graceful close: see objects_client.ts).
   */
  release(peer: string, fs: FramedStream<M, M>): void {
    const idle = this.#idle.get(peer) ?? [];
    if (this.#closed || idle.length >= this.#maxIdle || fs.stream.status !== "open") {
      fs.abort(new Error("not needed"));
      return;
    }
    idle.push({ fs, since: Date.now() });
    this.#idle.set(peer, idle);
    this.#startSweeper();
  }

  /** Idle streams per peer (for status and tests). */
  idleCount(peer: string): number {
    return this.#idle.get(peer)?.length ?? 0;
  }

  /** Reset every idle stream and stop keeping new ones. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    for (const list of this.#idle.values()) {
      for (const { fs } of list) fs.abort(new Error("pool closed"));
    }
    this.#idle.clear();
  }

  #startSweeper(): void {
    if (this.#sweeper !== undefined) return;
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(1000, this.#idleMs / 3));
    // Idle streams must not keep the process alive.
    Deno.unrefTimer(this.#sweeper);
  }

  /** Close streams idle for longer than idleMs; stop sweeping once none are left. */
  #sweep(): void {
    const now = Date.now();
    for (const [peer, list] of this.#idle) {
      const keep = list.filter(({ fs, since }) => {
        if (now - since < this.#idleMs && fs.stream.status === "open") return true;
        fs.abort(new Error("idle"));
        return false;
      });
      if (keep.length > 0) this.#idle.set(peer, keep);
      else this.#idle.delete(peer);
    }
    if (this.#idle.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }
}
