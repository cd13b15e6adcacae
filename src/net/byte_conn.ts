/**
 * A byte connection as ConnStream (conn_stream.ts) drives it: chunks read in order, writes
 * resolved once the bytes are handed on, a half-close and a teardown. Two kinds: a Deno
 * connection (the dialing side of a bulk connection) and a node:tls socket (the accepting
 * side: Deno's own TLS listener gives no way to turn Nagle's algorithm off, and with it on
 * each small answer waited about 40 ms for the peer's delayed acknowledgement).
 */
import type { TLSSocket } from "node:tls";

/** What ConnStream reads from and writes to. */
export interface ByteConn {
  /** The next bytes received (owned by the caller), or null once the peer ended its side. */
  readChunk(): Promise<Uint8Array | null>;
  /** Write all of `data`; the caller must not change it until this resolves. */
  write(data: Uint8Array): Promise<void>;
  /** End our side after what was written; the peer may still send. */
  closeWrite(): Promise<void>;
  /** Tear the connection down, both directions. */
  close(): void;
}

/** Bytes of each read from a Deno connection. */
const READ_SIZE = 256 * 1024;

/** A Deno connection (TCP or TLS) as a ByteConn. */
export function denoByteConn(
  conn: { read(p: Uint8Array): Promise<number | null>; write(p: Uint8Array): Promise<number> } & {
    closeWrite(): Promise<void>;
    close(): void;
  },
): ByteConn {
  // Read into one buffer and hand out copies of what arrived: a TLS read returns a record or
  // a few (16 KiB each), and a fresh buffer per read was mostly garbage.
  const buf = new Uint8Array(READ_SIZE);
  return {
    async readChunk() {
      const n = await conn.read(buf);
      return n === null ? null : buf.slice(0, n);
    },
    async write(data) {
      let off = 0;
      while (off < data.length) off += await conn.write(data.subarray(off));
    },
    closeWrite: () => conn.closeWrite(),
    close: () => conn.close(),
  };
}

/** Received bytes a node socket buffers before it is paused. */
const SOCKET_HIGH_WATER = 1024 * 1024;

/** A node:tls socket as a ByteConn (reading is paused while SOCKET_HIGH_WATER is buffered). */
export function nodeSocketByteConn(sock: TLSSocket): ByteConn {
  const chunks: Uint8Array[] = [];
  let buffered = 0;
  let ended = false;
  let failure: Error | null = null;
  let wake: (() => void) | null = null;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  sock.on("data", (d: Uint8Array) => {
    chunks.push(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    buffered += d.byteLength;
    if (buffered > SOCKET_HIGH_WATER) sock.pause();
    notify();
  });
  sock.on("end", () => {
    ended = true;
    notify();
  });
  sock.on("close", () => {
    ended = true;
    notify();
  });
  sock.on("error", (e: Error) => {
    failure ??= e;
    notify();
  });
  return {
    async readChunk() {
      while (chunks.length === 0) {
        if (failure !== null) throw failure;
        if (ended) return null;
        await new Promise<void>((resolve) => wake = resolve);
      }
      const chunk = chunks.shift()!;
      buffered -= chunk.length;
      if (buffered <= SOCKET_HIGH_WATER && sock.isPaused()) sock.resume();
      return chunk;
    },
    write(data) {
      if (failure !== null) return Promise.reject(failure);
      return new Promise<void>((resolve, reject) => {
        sock.write(data, (err?: Error | null) => err ? reject(err) : resolve());
      });
    },
    closeWrite() {
      return new Promise<void>((resolve) => sock.end(() => resolve()));
    },
    close() {
      sock.destroy();
    },
  };
}
