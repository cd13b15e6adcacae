/**
 * Client side of pushing on /filesync/objects/1: send a peer the objects it lacks and learn
 * that it holds all of them durably. The write path needs this before it proposes a change
 * (DESIGN.md, "Durability before commit"): a committed file must never name chunks that a
 * crash of the nodes holding them could lose.
 *
 * One push is one stream: `have` queries (MAX_HAVE_HASHES hashes each) find what the peer
 * lacks, `store` frames carry those objects (read from local storage a few ahead of the one
 * being sent, so disk reads overlap the network), and a final `flush` is answered by
 * `flushed` only after the peer fsynced. The flush is sent even when the peer lacked nothing:
 * a peer may report an object it accepted but has not made durable yet.
 *
 * Flow control: the peer answers every `store` once it took the object, and we keep at most
 * `windowBytes` unanswered. The transport does not hold us back by itself (see
 * PUSH_WINDOW_LIMIT in objects_server.ts): without the window, a peer whose disk is slower
 * than the network would buffer until its stream layer reset the stream.
 */
import { type Hash, HASH_LENGTH, hashEquals, sha256, toHex } from "../chunk/hash.ts";
import {
  encodeStoreFrameHeader,
  MAX_HAVE_HASHES,
  MAX_OBJECT_SIZE,
  OBJECT_FRAME_OVERHEAD,
  objectsCodec,
  type ObjectsMessage,
} from "./codec.ts";
import { deadline } from "./deadline.ts";
import { PushError, WireDecodeError } from "./errors.ts";
import { FramedStream, StreamEndedError } from "./framed_stream.ts";
import type { BulkDialer } from "./bulk.ts";
import type { Host } from "./host.ts";
import { OBJECTS_PROTOCOL, PUSH_WINDOW_LIMIT } from "./objects_server.ts";

/** Reads a local object by hash (the push verifies what it returns before sending it). */
export type ObjectReader = (hash: Hash) => Promise<Uint8Array>;

/** Options of one push. */
export interface PushOptions {
  signal?: AbortSignal;
  /** Hashes per `have` query (default and at most MAX_HAVE_HASHES). */
  batch?: number;
  /**
   * Objects read ahead of the one being sent (default: as many as make about 4 MiB at the
   * average size read so far, between 4 and 64: tiny objects need a deep pipeline, since
   * each local read is a round trip of its own, and large ones must not pile up in memory).
   */
  readAhead?: number;
  /** Bytes of `store` frames sent but not yet answered (default 2 MiB, at most 4 MiB). */
  windowBytes?: number;
  /** Longest wait for the stream to open or for any one answer of the peer, ms (30,000). */
  stallMs?: number;
  /**
   * Longest wait for `flushed` once `flush` is sent, ms (default 60,000): an fsync can take a
   * while on a busy disk, and this wait includes the answers to the last stores.
   */
  flushTimeoutMs?: number;
}

/** Outcome of a push that the peer confirmed. */
export interface PushResult {
  /** Objects sent (the peer lacked them); all are durable on the peer now. */
  sent: number;
  /** Bytes of object data sent. */
  bytes: number;
  /** Distinct objects the peer already held, so not sent. */
  alreadyHeld: number;
}

type ObjectsStream = FramedStream<ObjectsMessage, ObjectsMessage>;

/** A local read started ahead of its turn; never rejects (see ReadAhead). */
type PendingRead = Promise<{ data: Uint8Array } | { error: unknown }>;

/** Adaptive read-ahead: bytes aimed for, and bounds in objects (see PushOptions.readAhead). */
const ADAPTIVE_READ_BYTES = 4 * 1024 * 1024;
const ADAPTIVE_MIN_DEPTH = 4;
const ADAPTIVE_MAX_DEPTH = 64;
/** Bytes of unread answers after which our side of the stream pauses: answers are tiny. */
const READ_HIGH_WATER = 256 * 1024;
/** Longest wait for the stream to open, ms (less if stallMs is less). */
const OPEN_TIMEOUT_MS = 10_000;

/** Pushes objects to members and waits until they hold them durably. */
export class ObjectPusher {
  /** `bulk`: push over TLS-on-TCP bulk connections where peers offer them (bulk.ts). */
  constructor(private readonly host: Host, private readonly opts: { bulk?: BulkDialer } = {}) {}

  /**
   * Make `peerId` hold every object of `hashes` durably: send those it lacks (bytes from
   * `read`), then have it flush. Resolves only once the peer confirmed the flush; rejects with
   * a PushError naming the peer otherwise. An empty `hashes` resolves without contacting the
   * peer.
   */
  async push(
    peerId: string,
    hashes: Hash[],
    read: ObjectReader,
    opts: PushOptions = {},
  ): Promise<PushResult> {
    const unique = distinct(hashes);
    if (unique.length === 0) return { sent: 0, bytes: 0, alreadyHeld: 0 };
    if (peerId === this.host.peerId) {
      throw new PushError(peerId, "unreachable", "cannot push objects to this node itself");
    }
    const fs = await openStream(this.host, peerId, opts, this.opts.bulk);
    return await new PushRun(fs, peerId, opts).run(unique, read);
  }
}

/** `hashes` without repeats, in first-seen order; throws TypeError for a malformed hash. */
function distinct(hashes: Hash[]): Hash[] {
  const seen = new Set<string>();
  const out: Hash[] = [];
  for (const h of hashes) {
    if (!(h instanceof Uint8Array) || h.length !== HASH_LENGTH) {
      throw new TypeError(`push: every hash must be ${HASH_LENGTH} bytes`);
    }
    const key = toHex(h);
    if (!seen.has(key)) {
      seen.add(key);
      out.push(h);
    }
  }
  return out;
}

/** Open the push stream, within the stall limit and the caller's signal. */
async function openStream(
  host: Host,
  peerId: string,
  opts: PushOptions,
  bulk: BulkDialer | undefined,
): Promise<ObjectsStream> {
  const ms = Math.min(opts.stallMs ?? 30_000, OPEN_TIMEOUT_MS);
  const timer = deadline(ms);
  const signal = withTimer(opts.signal, timer.signal);
  try {
    const stream = (await bulk?.open(peerId, signal)) ??
      await host.openStream(peerId, OBJECTS_PROTOCOL, { signal });
    return new FramedStream(stream, objectsCodec, objectsCodec, { readHighWater: READ_HIGH_WATER });
  } catch (err) {
    if (opts.signal?.aborted) {
      throw new PushError(peerId, "aborted", `push to ${peerId} aborted: ${opts.signal.reason}`);
    }
    const why = timer.signal.aborted ? `no stream within ${ms} ms` : (err as Error).message;
    throw new PushError(peerId, "unreachable", `cannot open a push stream to ${peerId}: ${why}`);
  } finally {
    timer.clear();
  }
}

/** The caller's signal (if any) combined with a timer's. */
function withTimer(signal: AbortSignal | undefined, timer: AbortSignal): AbortSignal {
  return signal === undefined ? timer : AbortSignal.any([signal, timer]);
}

/** The state of one push() call on its stream. */
class PushRun {
  readonly #batch: number;
  readonly #readAhead: number;
  readonly #window: number;
  readonly #stallMs: number;
  readonly #flushTimeoutMs: number;
  /** Frame sizes of the stores sent and not yet answered, oldest first. */
  readonly #unanswered: number[] = [];
  #unansweredBytes = 0;
  /** Stores the peer answered so far. */
  #answered = 0;
  #sent = 0;
  #bytes = 0;
  #alreadyHeld = 0;

  constructor(
    private readonly fs: ObjectsStream,
    private readonly peer: string,
    private readonly opts: PushOptions,
  ) {
    this.#batch = Math.min(MAX_HAVE_HASHES, Math.max(1, opts.batch ?? MAX_HAVE_HASHES));
    this.#readAhead = opts.readAhead === undefined ? 0 : Math.max(1, opts.readAhead);
    this.#window = Math.min(PUSH_WINDOW_LIMIT, Math.max(1, opts.windowBytes ?? 2 * 1024 * 1024));
    this.#stallMs = Math.max(1, opts.stallMs ?? 30_000);
    this.#flushTimeoutMs = Math.max(1, opts.flushTimeoutMs ?? 60_000);
  }

  /** Query, store, flush; the stream is reset at the end either way. */
  async run(hashes: Hash[], read: ObjectReader): Promise<PushResult> {
    try {
      const lacking = await this.#lacking(hashes);
      await this.#storeAll(lacking, read);
      await this.#flush();
      // Every request is answered, so nothing is lost by resetting rather than closing
      // gracefully; a graceful close waits for the server's side to close too, and such
      // half-closed streams used to exhaust libp2p's per-connection stream limit (as in
      // objects_client.ts).
      this.fs.abort(new Error("push done"));
      return { sent: this.#sent, bytes: this.#bytes, alreadyHeld: this.#alreadyHeld };
    } catch (err) {
      const e = this.#explain(err);
      this.fs.abort(e);
      throw e;
    }
  }

  /** Ask the peer which objects it holds; returns the others, in order. */
  async #lacking(hashes: Hash[]): Promise<Hash[]> {
    const out: Hash[] = [];
    for (let i = 0; i < hashes.length; i += this.#batch) {
      const part = hashes.slice(i, i + this.#batch);
      await this.fs.write({ type: "have", hashes: part }, this.opts.signal);
      const reply = await this.#next("the answer to a have query", this.#stallMs);
      if (reply.type !== "haveReply") {
        throw this.#protocol(`answered a have query with ${describe(reply)}`);
      }
      if (reply.bits.length !== Math.ceil(part.length / 8)) {
        throw this.#protocol(`answered ${part.length} hashes with ${reply.bits.length} bytes`);
      }
      part.forEach((h, j) => {
        if ((reply.bits[j >> 3] & (1 << (j & 7))) !== 0) this.#alreadyHeld++;
        else out.push(h);
      });
    }
    return out;
  }

  /** Send every lacking object, reading ahead, within the window of unanswered bytes. */
  async #storeAll(lacking: Hash[], read: ObjectReader): Promise<void> {
    const reads = new ReadAhead(lacking, read, this.#readAhead);
    for (let i = 0; i < lacking.length; i++) {
      const data = await this.#local(lacking[i], reads.take(i));
      const size = data.length + OBJECT_FRAME_OVERHEAD;
      // Always let one store through, so an object larger than the window still goes.
      while (this.#unanswered.length > 0 && this.#unansweredBytes + size > this.#window) {
        await this.#takeStoreAnswer(this.#stallMs);
      }
      await this.fs.writeParts([encodeStoreFrameHeader(lacking[i], data), data], this.opts.signal);
      this.#unanswered.push(size);
      this.#unansweredBytes += size;
      this.#sent++;
      this.#bytes += data.length;
    }
  }

  /** Send `flush` and wait for the answers to the last stores, then for `flushed`. */
  async #flush(): Promise<void> {
    await this.fs.write({ type: "flush" }, this.opts.signal);
    const end = Date.now() + this.#flushTimeoutMs;
    // Bounded: one answer per unanswered store, then the flush's own.
    while (this.#unanswered.length > 0) {
      await this.#takeStoreAnswer(Math.max(1, end - Date.now()));
    }
    const msg = await this.#next("confirmation of the flush", Math.max(1, end - Date.now()));
    if (msg.type !== "flushed") throw this.#protocol(`answered flush with ${describe(msg)}`);
    if (msg.count !== this.#sent) {
      throw this.#protocol(`confirmed ${msg.count} stored objects, ${this.#sent} were sent`);
    }
  }

  /** Wait for the answer to the oldest unanswered store, which frees its part of the window. */
  async #takeStoreAnswer(ms: number): Promise<void> {
    const msg = await this.#next("the answer to a store", ms);
    if (msg.type !== "stored" || msg.count !== this.#answered + 1) {
      throw this.#protocol(`answered store ${this.#answered + 1} with ${describe(msg)}`);
    }
    this.#answered++;
    this.#unansweredBytes -= this.#unanswered.shift()!;
  }

  /**
   * The next message from the peer within `ms`. A `refused` is turned into its PushError here,
   * since the peer may send it in place of any answer.
   */
  async #next(what: string, ms: number): Promise<ObjectsMessage> {
    const timer = deadline(ms);
    try {
      const msg = await this.fs.read(withTimer(this.opts.signal, timer.signal));
      if (msg === null) {
        throw new PushError(this.peer, "closed", `${this.peer} ended the push before ${what}`);
      }
      if (msg.type === "refused") {
        throw new PushError(this.peer, "refused", `${this.peer} refused the push: ${msg.reason}`);
      }
      return msg;
    } catch (err) {
      if (timer.signal.aborted && !this.opts.signal?.aborted) {
        throw new PushError(this.peer, "timeout", `no ${what} from ${this.peer} within ${ms} ms`);
      }
      throw err;
    } finally {
      timer.clear();
    }
  }

  /**
   * A local object, checked before it is sent. A damaged one would otherwise be caught by the
   * peer, which resets the stream and logs us as a corrupt sender: the failure would look
   * like the network's or the peer's rather than our disk's.
   */
  async #local(hash: Hash, pending: PendingRead): Promise<Uint8Array> {
    const result = await untilAborted(pending, this.opts.signal);
    const fail = (why: string) =>
      new PushError(this.peer, "read", `cannot push ${toHex(hash)} to ${this.peer}: ${why}`);
    if ("error" in result) throw fail(`reading it failed: ${(result.error as Error)?.message}`);
    const data = result.data;
    if (!(data instanceof Uint8Array)) throw fail("the reader returned no bytes");
    if (data.length > MAX_OBJECT_SIZE) {
      throw fail(`${data.length} bytes, over the limit of ${MAX_OBJECT_SIZE}`);
    }
    if (!hashEquals(sha256(data), hash)) throw fail("the local bytes do not match the hash");
    return data;
  }

  #protocol(what: string): PushError {
    return new PushError(this.peer, "protocol", `${this.peer} ${what}`);
  }

  /** Any failure as a PushError naming the peer. */
  #explain(err: unknown): PushError {
    if (err instanceof PushError) return err;
    const signal = this.opts.signal;
    if (signal?.aborted) {
      return new PushError(this.peer, "aborted", `push to ${this.peer} aborted: ${signal.reason}`);
    }
    const message = (err as Error)?.message ?? String(err);
    if (err instanceof WireDecodeError) {
      return new PushError(this.peer, "protocol", `${this.peer} sent a bad message: ${message}`);
    }
    const prefix = err instanceof StreamEndedError ? "" : "stream failed: ";
    return new PushError(
      this.peer,
      "closed",
      `push to ${this.peer} ended before the peer confirmed durability: ${prefix}${message}`,
    );
  }
}

/**
 * Local reads started up to `depth` objects ahead of the one being sent. Each read's outcome
 * is captured, so a read still running when the push fails never becomes an unhandled
 * rejection.
 */
class ReadAhead {
  readonly #started = new Map<number, PendingRead>();
  #next = 0;
  #readBytes = 0;
  #readCount = 0;

  constructor(
    private readonly hashes: Hash[],
    private readonly read: ObjectReader,
    /** Fixed depth, or 0 for the adaptive one (see PushOptions.readAhead). */
    private readonly fixedDepth: number,
  ) {}

  get #depth(): number {
    if (this.fixedDepth > 0) return this.fixedDepth;
    if (this.#readCount === 0) return ADAPTIVE_MIN_DEPTH;
    const average = Math.max(1, this.#readBytes / this.#readCount);
    const depth = Math.floor(ADAPTIVE_READ_BYTES / average);
    return Math.max(ADAPTIVE_MIN_DEPTH, Math.min(ADAPTIVE_MAX_DEPTH, depth));
  }

  /** The read of object i (i taken in increasing order), with the following ones started. */
  take(i: number): PendingRead {
    const depth = this.#depth;
    while (this.#next < this.hashes.length && this.#next <= i + depth) {
      const n = this.#next++;
      this.#started.set(n, this.#start(this.hashes[n]));
    }
    const pending = this.#started.get(i)!;
    this.#started.delete(i);
    return pending;
  }

  #start(hash: Hash): PendingRead {
    // Through a promise chain, so a reader that throws instead of rejecting is captured too.
    return Promise.resolve(hash).then((h) => this.read(h)).then(
      (data) => {
        this.#readBytes += data.length;
        this.#readCount++;
        return { data };
      },
      (error) => ({ error }),
    );
  }
}

/** `p`, unless the signal aborts first (then rejects with its reason). */
function untilAborted<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** A message, named for an error text. */
function describe(msg: ObjectsMessage): string {
  return msg.type === "stored" || msg.type === "flushed" ? `${msg.type} ${msg.count}` : msg.type;
}
