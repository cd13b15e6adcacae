/**
 * Server side of /filesync/objects/1: answers `have` and `want` requests from members out of
 * an injected ObjectProvider (the daemon's object store and chunk locator).
 *
 * Requests on a stream are answered strictly in order. For `want`, up to `prefetch` lookups
 * run ahead of the one being sent so disk reads overlap network writes, and every write waits
 * while the stream's queue is above its high-water mark: a client that stops reading stops
 * costing us memory. The client verifies every object against its hash, so a damaged store
 * cannot poison peers; the provider should still not serve what it knows to be damaged.
 */
import type { Hash } from "../chunk/hash.ts";
import {
  encodeObjectFrameHeader,
  MAX_OBJECT_SIZE,
  objectsCodec,
  type ObjectsMessage,
} from "./codec.ts";
import { WireDecodeError } from "./errors.ts";
import { FramedStream } from "./framed_stream.ts";
import type { Host } from "./host.ts";

/** Protocol id of object exchange. */
export const OBJECTS_PROTOCOL = "/filesync/objects/1";

/** Where served objects come from. */
export interface ObjectProvider {
  /** Whether the object is held locally (cheap; no need to read it). */
  has(hash: Hash): Promise<boolean>;
  /** The object's bytes, or null if it is not held. */
  get(hash: Hash): Promise<Uint8Array | null>;
}

/** Options of serveObjects. */
export interface ObjectServerOptions {
  /** Object lookups running ahead of the one being sent, per stream (default 4). */
  prefetch?: number;
  /** Queued outgoing bytes per stream before we wait for the client (default 2 MiB). */
  writeHighWater?: number;
  /** Concurrent streams per connection (default 64). */
  maxStreams?: number;
}

type ObjectsStream = FramedStream<ObjectsMessage, ObjectsMessage>;

/** Serve objects from `provider` to members. */
export async function serveObjects(
  host: Host,
  provider: ObjectProvider,
  opts: ObjectServerOptions = {},
): Promise<void> {
  const prefetch = Math.max(1, opts.prefetch ?? 4);
  const writeHighWater = opts.writeHighWater ?? 2 * 1024 * 1024;
  await host.handle(OBJECTS_PROTOCOL, async (stream, peer) => {
    const fs: ObjectsStream = new FramedStream(stream, objectsCodec, objectsCodec, {
      writeHighWater,
      // Requests are small; a client has no reason to have much more than a few in flight.
      readHighWater: 256 * 1024,
    });
    try {
      while (true) {
        const msg = await readWithin(fs, IDLE_STREAM_MS);
        if (msg === null) break;
        if (!host.gate.isMember(peer)) {
          fs.abort(new Error("no longer a member"));
          return;
        }
        if (msg.type === "have") {
          const held = await Promise.all(msg.hashes.map((h) => provider.has(h)));
          const bits = new Uint8Array(Math.ceil(held.length / 8));
          held.forEach((yes, i) => {
            if (yes) bits[i >> 3] |= 1 << (i & 7);
          });
          await fs.write({ type: "haveReply", bits });
        } else if (msg.type === "want") {
          await sendObjects(fs, provider, msg.hashes, prefetch, host, peer);
        } else {
          throw new WireDecodeError("unknown-type", `unexpected ${msg.type} from a client`);
        }
      }
      // The client is done: it reads every answer before it ends its side, so nothing is
      // lost by resetting. A graceful close waited for a close the client never sends once it
      // has reset, and libp2p counted each such stream against the per-connection limit
      // until no new stream could open.
      fs.abort(new Error("client done"));
    } catch (err) {
      if (err instanceof WireDecodeError) {
        host.logger.warn(`objects stream from ${peer}: ${err.message}`);
      }
      fs.abort(err as Error);
    }
  }, { membersOnly: true, maxInboundStreams: opts.maxStreams ?? 64, maxOutboundStreams: 64 });
}

/**
 * A stream with no request for this long is dropped. Clients open a stream per fetch and end
 * it when done; one that never does (a crashed or misbehaving client, or a reset the stream
 * layer did not pass on) would otherwise hold one of the connection's 64 stream slots forever.
 */
const IDLE_STREAM_MS = 10_000;

/** The next message, or null at the end of the stream or after `ms` without one. */
async function readWithin(fs: ObjectsStream, ms: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const idle = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
    Deno.unrefTimer(timer);
  });
  try {
    return await Promise.race([fs.read(), idle]);
  } finally {
    clearTimeout(timer);
  }
}

async function sendObjects(
  fs: ObjectsStream,
  provider: ObjectProvider,
  hashes: Hash[],
  prefetch: number,
  host: Host,
  peer: string,
): Promise<void> {
  const lookups: Promise<Uint8Array | null>[] = [];
  const lookup = (i: number) => {
    // A failing provider answers "missing" for that object rather than killing the stream.
    lookups[i] = provider.get(hashes[i]).catch((err) => {
      host.logger.warn(`object provider failed: ${(err as Error).message}`);
      return null;
    });
  };
  for (let i = 0; i < Math.min(prefetch, hashes.length); i++) lookup(i);
  for (let i = 0; i < hashes.length; i++) {
    if (i + prefetch < hashes.length) lookup(i + prefetch);
    const data = await lookups[i];
    delete lookups[i];
    if (data !== null && data.length > MAX_OBJECT_SIZE) {
      host.logger.warn(`object of ${data.length} bytes is too large to serve to ${peer}`);
    }
    if (data === null || data.length > MAX_OBJECT_SIZE) {
      await fs.write({ type: "missing", hash: hashes[i] });
    } else {
      await fs.writeParts([encodeObjectFrameHeader(hashes[i], data), data]);
    }
  }
}
