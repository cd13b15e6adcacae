/**
 * Server side of /filesync/objects/1: answers `have` and `want` requests from members out of
 * an injected ObjectProvider (the daemon's object store and chunk locator), and, when given an
 * ObjectReceiver, takes objects members push (`store`) and makes them durable (`flush`).
 *
 * Requests on a stream are answered strictly in order. For `want`, up to `prefetch` lookups
 * run ahead of the one being sent so disk reads overlap network writes, and every write waits
 * while the stream's queue is above its high-water mark: a client that stops reading stops
 * costing us memory. The client verifies every object against its hash, so a damaged store
 * cannot poison peers; the provider should still not serve what it knows to be damaged.
 *
 * Pushed objects are verified here, before the receiver sees them: a `store` whose bytes do
 * not hash to its hash gets the stream reset and nothing of it stored. Stores are handed over
 * one at a time, in order, and each is answered (`stored`) only once the receiver took it; a
 * pusher keeps at most PUSH_WINDOW_LIMIT bytes unanswered, so what we buffer for a stream
 * stays bounded (see PUSH_WINDOW_LIMIT for why the transport alone would not bound it).
 */
import { type Hash, hashEquals, sha256, toHex } from "../chunk/hash.ts";
import {
  encodeObjectFrameHeader,
  MAX_OBJECT_SIZE,
  MAX_REFUSAL_LENGTH,
  objectsCodec,
  type ObjectsMessage,
} from "./codec.ts";
import { WireDecodeError } from "./errors.ts";
import type { MessageStream } from "./conn_stream.ts";
import { FramedStream } from "./framed_stream.ts";
import type { Host } from "./host.ts";

/** Protocol id of object exchange. */
export const OBJECTS_PROTOCOL = "/filesync/objects/1";

/** Where served objects come from. */
export interface ObjectProvider {
  /**
   * Whether the object is held locally (cheap; no need to read it). Pushers skip what this
   * says is held, and count on the next receiver flush to make it durable if it is not yet.
   */
  has(hash: Hash): Promise<boolean>;
  /** The object's bytes, or null if it is not held. */
  get(hash: Hash): Promise<Uint8Array | null>;
  /**
   * The server is done with bytes `get` returned (they were copied into a send buffer): a
   * provider that reads into pooled buffers can reuse them.
   */
  release?(bytes: Uint8Array): void;
}

/** Where pushed objects go (the daemon's object store). */
export interface ObjectReceiver {
  /**
   * Accept an object; it need not be durable yet. Called only with bytes already verified
   * against `hash`, one call at a time per stream, in the order pushed. `bytes` may be a view
   * into a larger receive buffer: copy it if it is kept. A rejection refuses the push.
   */
  store(hash: Hash, bytes: Uint8Array): Promise<void>;
  /**
   * Make `hashes` durable (fsynced, and findable after a crash): the objects this stream
   * stored and those it asked about (`have` may count an object another push stored and that
   * is not durable yet). The pusher is told its objects are durable only once this resolved;
   * a rejection refuses the push.
   */
  flush(hashes: readonly Hash[]): Promise<void>;
}

/** Options of serveObjects. */
export interface ObjectServerOptions {
  /** Object lookups running ahead of the one being sent, per stream (default 4). */
  prefetch?: number;
  /** Queued outgoing bytes per stream before we wait for the client (default 2 MiB). */
  writeHighWater?: number;
  /**
   * Bytes of each of the (at most two) send buffers per stream that objects are copied into
   * on their way out (default 1 MiB; 0 for none, see FramedStreamOptions.sendBuffer).
   */
  sendBuffer?: number;
  /** Concurrent streams per connection (default 64). */
  maxStreams?: number;
  /** Takes objects members push. Without one, a `store` is refused and its stream reset. */
  receiver?: ObjectReceiver;
}

type ObjectsStream = FramedStream<ObjectsMessage, ObjectsMessage>;

/**
 * Unread bytes after which a stream is paused. Requests are small, and a pusher keeps at most
 * PUSH_WINDOW_LIMIT bytes of stores unanswered, so a client has no reason to have much more
 * than this in flight.
 */
const READ_HIGH_WATER = 256 * 1024;

/**
 * Most bytes of `store` frames (data plus envelope) a pusher may have sent and not yet seen
 * answered; it may exceed this only by a single object, when that object alone is larger.
 *
 * Why an application-level window: pausing a stream does not hold a QUIC sender back here.
 * The transport reads every stream eagerly (@chainsafe/libp2p-quic: pause is a no-op), so
 * QUIC's flow-control window keeps opening, and a paused stream buffers in libp2p until
 * `maxReadBufferLength` (one maximal frame plus 64 KiB, see FramedStream), then is reset. A
 * pusher that waits for answers keeps what we buffer below READ_HIGH_WATER plus that limit,
 * which this value (and the one-object excess, at most one frame) stays under.
 */
export const PUSH_WINDOW_LIMIT = 4 * 1024 * 1024;

/**
 * How long a stream whose push we refused waits for the client to end it after reading the
 * refusal, before we reset it ourselves. Resetting at once could discard the refusal unsent,
 * and the client would see a bare reset instead of the reason.
 */
const REFUSAL_LINGER_MS = 10_000;

/** A push we will not take: the client is told why (`refused`), then the stream ends. */
class Refusal extends Error {
  override name = "Refusal";
}

/** The state of one inbound stream. */
interface Session {
  readonly fs: ObjectsStream;
  readonly peer: string;
  /** Objects stored on this stream so far (the count `stored` and `flushed` report). */
  stored: number;
  /** Objects stored or asked about since the last flush: what the next one makes durable. */
  touched: Hash[];
}

/**
 * Serve objects from `provider` to members (and take pushed ones into `opts.receiver`), on
 * libp2p streams; returns the handler of one stream, for bulk connections (bulk.ts) too.
 */
export async function serveObjects(
  host: Host,
  provider: ObjectProvider,
  opts: ObjectServerOptions = {},
): Promise<(stream: MessageStream, peer: string) => Promise<void>> {
  const handler = objectsStreamHandler(host, provider, opts);
  await host.handle(OBJECTS_PROTOCOL, handler, {
    membersOnly: true,
    allowClients: true,
    maxInboundStreams: opts.maxStreams ?? 64,
    maxOutboundStreams: 64,
  });
  return handler;
}

/** Answers the requests of one objects stream until the client ends it. */
function objectsStreamHandler(
  host: Host,
  provider: ObjectProvider,
  opts: ObjectServerOptions,
): (stream: MessageStream, peer: string) => Promise<void> {
  const prefetch = Math.max(1, opts.prefetch ?? 4);
  const writeHighWater = opts.writeHighWater ?? 2 * 1024 * 1024;
  const sendBuffer = opts.sendBuffer ?? 1024 * 1024;
  const receiver = opts.receiver ?? null;
  return async (stream, peer) => {
    const fs: ObjectsStream = new FramedStream(stream, objectsCodec, objectsCodec, {
      writeHighWater,
      sendBuffer,
      readHighWater: READ_HIGH_WATER,
    });
    const session: Session = { fs, peer, stored: 0, touched: [] };
    try {
      while (true) {
        const msg = await readWithin(fs, IDLE_STREAM_MS);
        if (msg === null) break;
        if (!host.gate.isMember(peer)) {
          if (!host.gate.isClient(peer)) {
            fs.abort(new Error("no longer a member or client"));
            return;
          }
          host.gate.renewClient(peer); // a long transfer keeps its client admitted
        }
        if (msg.type === "have") {
          // Copies: a view would keep its whole receive buffer alive until the flush.
          if (receiver !== null) { for (const h of msg.hashes) session.touched.push(h.slice()); }
          await answerHave(fs, provider, msg.hashes);
        } else if (msg.type === "want") {
          await sendObjects(fs, provider, msg.hashes, prefetch, host, peer);
        } else if (msg.type === "store") {
          await storeObject(session, receiver, msg.hash, msg.data);
        } else if (msg.type === "flush") {
          await flushObjects(session, receiver);
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
      if (err instanceof Refusal) {
        host.logger.warn(`objects stream from ${peer}: ${err.message}`);
        await refuse(fs, err.message);
        return;
      }
      if (err instanceof WireDecodeError) {
        host.logger.warn(`objects stream from ${peer}: ${err.message}`);
      }
      fs.abort(err as Error);
    }
  };
}

/**
 * A stream with no request for this long is dropped. Clients keep streams open between
 * requests and reuse them, closing one themselves after about 30 s idle; this is twice that,
 * so we never drop a stream a client still counts on (a request racing our reset would fail).
 * It still bounds a stream that a crashed or misbehaving client never ends, or whose reset the
 * stream layer did not pass on, which would otherwise hold one of the connection's 64 stream
 * slots forever.
 */
const IDLE_STREAM_MS = 60_000;

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

/** Answer a `have`: bit i of the reply is set when hash i is held. */
async function answerHave(fs: ObjectsStream, provider: ObjectProvider, hashes: Hash[]) {
  const held = await Promise.all(hashes.map((h) => provider.has(h)));
  const bits = new Uint8Array(Math.ceil(held.length / 8));
  held.forEach((yes, i) => {
    if (yes) bits[i >> 3] |= 1 << (i & 7);
  });
  await fs.write({ type: "haveReply", bits });
}

/**
 * Take one pushed object: verify it, hand it to the receiver, answer `stored`. Awaited before
 * the next request is read, so stores reach the receiver in order and an unanswered pusher
 * stops sending (it keeps a bounded window).
 */
async function storeObject(
  session: Session,
  receiver: ObjectReceiver | null,
  hash: Hash,
  data: Uint8Array,
): Promise<void> {
  if (receiver === null) {
    throw new Refusal("refused a pushed object: this node takes no pushed objects");
  }
  if (!hashEquals(sha256(data), hash)) {
    // A protocol violation, not a refusal: the stream is reset and nothing of it kept.
    throw new WireDecodeError(
      "invalid-field",
      `corrupt pushed object: ${data.length} bytes do not hash to ${toHex(hash)}; not stored`,
    );
  }
  try {
    await receiver.store(hash, data);
  } catch (err) {
    throw new Refusal(`storing pushed object ${toHex(hash)} failed: ${(err as Error).message}`);
  }
  session.stored++;
  session.touched.push(hash.slice());
  await session.fs.write({ type: "stored", count: session.stored });
}

/** Answer a `flush` with `flushed`, only once the receiver made every stored object durable. */
async function flushObjects(session: Session, receiver: ObjectReceiver | null): Promise<void> {
  if (receiver === null) {
    throw new Refusal("refused a flush: this node takes no pushed objects");
  }
  const touched = session.touched;
  session.touched = [];
  try {
    await receiver.flush(touched);
  } catch (err) {
    throw new Refusal(`flushing pushed objects failed: ${(err as Error).message}`);
  }
  await session.fs.write({ type: "flushed", count: session.stored });
}

/**
 * Tell the client why its push is refused, then end the stream: once the client ended its
 * side after reading the reason, or after REFUSAL_LINGER_MS. Stores the client sent meanwhile
 * are never read: they wait in the stream's buffer, which pauses the stream, and libp2p resets
 * it if the client keeps sending.
 */
async function refuse(fs: ObjectsStream, reason: string): Promise<void> {
  try {
    await fs.write({ type: "refused", reason: reason.slice(0, MAX_REFUSAL_LENGTH) });
    await clientDone(fs, REFUSAL_LINGER_MS);
  } catch { /* the stream is gone already */ }
  fs.abort(new Refusal(reason));
}

/**
 * Resolves when the client can send no more (it reset the stream or closed its side; over
 * QUIC a client's reset shows here only as the end of its side) or after `ms`.
 */
function clientDone(fs: ObjectsStream, ms: number): Promise<void> {
  const stream = fs.stream;
  if (stream.status !== "open" || stream.remoteWriteStatus === "closed") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      stream.removeEventListener("close", done);
      stream.removeEventListener("remoteCloseWrite", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    Deno.unrefTimer(timer);
    stream.addEventListener("close", done);
    stream.addEventListener("remoteCloseWrite", done);
  });
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
      const header = encodeObjectFrameHeader(hashes[i], data);
      const copied = fs.copiesWrite(header.length + data.length);
      await fs.writeParts([header, data]);
      if (copied) provider.release?.(data);
    }
  }
}
