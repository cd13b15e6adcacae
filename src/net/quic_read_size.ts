/**
 * Larger reads from @chainsafe/libp2p-quic streams.
 *
 * The library's stream wrapper (QuicStream.readFromStream) asks the native quinn stream for at
 * most 4 KiB per read, and every read is one promise round trip from the Rust runtime into the
 * JS event loop. At 4 KiB that round trip, not the network, bounds a stream: measured here
 * (two hosts, one process, 256 MiB over one stream) 109 MiB/s with 4 KiB reads against
 * 184 MiB/s with 64 KiB reads, and the JS thread of a receiving process sits at ~95% CPU. The
 * native read is quinn's `read_chunk(max, ordered)`, which returns the bytes already received
 * up to `max` without allocating `max` up front, so asking for more costs nothing when little
 * is available. The wrapper hard-codes its size, so we raise it where it is applied: in the
 * native Stream class's `read(maxLength)`, which the wrapper calls (same module instance).
 * This is process-wide and idempotent; if a future version of the library changes the shape
 * of that class, nothing is patched and the default applies.
 */

/** Default bytes requested per native read (the library's own value is 4 KiB). */
export const QUIC_READ_SIZE = 256 * 1024;

let readSize = QUIC_READ_SIZE;
let installed: Promise<boolean> | null = null;

/**
 * Install the larger read size (once per process) and set its value, which applies to every
 * QUIC stream of the process. Resolves to whether the patch could be applied.
 */
export function installQuicReadSize(size: number = QUIC_READ_SIZE): Promise<boolean> {
  if (!Number.isInteger(size) || size < 1024 || size > 16 * 1024 * 1024) {
    throw new RangeError("QUIC read size must be an integer in 1 KiB..16 MiB");
  }
  readSize = size;
  installed ??= (async () => {
    try {
      const url = new URL("./napi.js", import.meta.resolve("@chainsafe/libp2p-quic"));
      const napi = await import(url.href);
      const proto = napi?.Stream?.prototype;
      if (typeof proto?.read !== "function" || proto.read.length > 1) return false;
      const nativeRead = proto.read as (this: unknown, maxLength: number) => Promise<unknown>;
      proto.read = function (this: unknown, maxLength: number) {
        return nativeRead.call(this, Math.max(maxLength, readSize));
      };
      return true;
    } catch {
      return false;
    }
  })();
  return installed;
}
