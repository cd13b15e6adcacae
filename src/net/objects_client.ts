/**
 * Client side of /filesync/objects/1: fetch many objects from several members at once, with
 * every object verified (SHA-256 of the bytes = the requested hash) before the caller sees it.
 *
 * Throughput comes from pipelining and parallelism: each peer gets `streamsPerPeer` streams,
 * and each stream keeps about `windowBytes` of objects requested ahead (pipelined `want`s,
 * answered in order), so the server never waits for a round trip. All streams pull batches from one
 * shared queue, so faster peers and streams simply take more. (With the transport's stock
 * 4 KiB reads one stream carried ~30 MiB/s and many streams were needed; with larger reads,
 * see quic_read_size.ts, two deep streams per peer did best here: bench/transport_bench.ts.)
 *
 * Failure handling:
 *  - a peer that sends an object whose hash does not match is logged, all its streams are
 *    dropped, and it is avoided (by this fetcher, for `avoidMs`); what it owed is requeued
 *    for the other peers;
 *  - a peer that says `missing` is not asked for that object again in this fetch;
 *  - a stream that fails or stalls for `stallMs` is dropped and its work requeued; a peer
 *    whose streams keep failing is given up for this fetch;
 *  - objects that no usable peer has are returned in `missing`.
 */
import { createHash } from "node:crypto";
import { type Hash, hashEquals, toHex } from "../chunk/hash.ts";
import {
  MAX_HAVE_HASHES,
  MAX_WANT_HASHES,
  OBJECTS_MAX_FRAME,
  objectsCodec,
  type ObjectsMessage,
} from "./codec.ts";
import { FetchError, WireDecodeError } from "./errors.ts";
import { deadline } from "./deadline.ts";
import { FramedStream } from "./framed_stream.ts";
import type { Host } from "./host.ts";
import { OBJECTS_PROTOCOL } from "./objects_server.ts";
import type { BulkDialer } from "./bulk.ts";
import { StreamPool } from "./stream_pool.ts";

/** Called with each verified object; the fetch waits for it (backpressure to the store). */
export type ObjectSink = (hash: Hash, bytes: Uint8Array) => Promise<void> | void;

/** Options of one fetch. */
export interface FetchOptions {
  /** Streams opened to each peer (default 2; see bench/transport_bench.ts). */
  streamsPerPeer?: number;
  /**
   * Bytes requested ahead per stream (default 16 MiB, the QUIC stream window). The number of
   * objects in flight is this divided by the average size of the objects received so far, so
   * the pipeline holds the same amount of data for 4 KiB Merkle nodes and 256 KiB chunks; a
   * deep pipeline is what keeps the server busy while either side's event loop is late.
   */
  windowBytes?: number;
  /** Most objects in flight per stream, whatever their size (default 512). */
  window?: number;
  /** Hashes per `want` request (default 16, at most MAX_WANT_HASHES). */
  batch?: number;
  /** A stream with requests outstanding and no answer for this long is dropped, ms (30,000). */
  stallMs?: number;
  /** Times a peer's stream may fail before the peer is given up for this fetch (default 3). */
  maxPeerFailures?: number;
  signal?: AbortSignal;
}

/** Outcome of a fetch. */
export interface FetchResult {
  /** Objects delivered to the sink. */
  fetched: number;
  /** Bytes delivered to the sink. */
  bytes: number;
  /** Requested objects that no usable peer could provide. */
  missing: Hash[];
  /** Peers caught sending a bad object during this fetch. */
  badPeers: string[];
}

interface Entry {
  hash: Hash;
  lackedBy: Set<string> | null;
  done: boolean;
  /** When it was last requested, ms (0: not yet). */
  askedAt: number;
  /** Asked of a second peer as well (endgame), so it is not duplicated again. */
  doubled: boolean;
  /**
   * Streams it is outstanding on. It goes back to the queue only when none is left: an object
   * one peer lacks is still coming from the other it was doubled to (asked of that one again,
   * a slow origin would send it twice).
   */
  holders: number;
}

/**
 * Endgame: once nothing is left to hand out, a stream with room asks for objects another
 * peer has had outstanding for this long too, and whichever answer comes first is used. A slow
 * member (a thin link, a busy disk) must not hold the end of a fetch for as long as it takes
 * to send its whole window, now that large fetches ask every member at once. Only a peer at
 * least twice as fast in this fetch takes over: a slow origin must not be handed the tail a
 * faster member is about to deliver (its link is what the fetch is short of).
 */
const ENDGAME_AFTER_MS = 300;
/**
 * Most objects doubled per fetch. There is no way to call back a request, so the slow peer
 * still sends what another delivered first: this bounds what that costs its link.
 */
const ENDGAME_MAX_DOUBLED = 64;

interface PeerState {
  id: string;
  usable: boolean;
  failures: number;
  streams: Set<Worker>;
  /**
   * Answers (objects and `missing`) this peer gave in this fetch, and when it was first asked:
   * its pace. A member that quickly says it lacks something is not slow.
   */
  answered: number;
  since: number;
}

interface Worker {
  peer: PeerState;
  fs: ObjectsStream | null;
  inflight: Entry[];
  lastProgress: number;
  /** Answers read on this stream. */
  received: number;
  /** The stream was dropped for not answering (or not opening) in time. */
  silent?: boolean;
  /** Our sink is taking an object: the peer's next answers wait on us, not on it. */
  delivering?: boolean;
}

type ObjectsStream = FramedStream<ObjectsMessage, ObjectsMessage>;

/** Bytes requested ahead per stream by default: the QUIC stream window. */
const DEFAULT_WINDOW_BYTES = 16 * 1024 * 1024;

/** How long a peer that stopped answering is left out of optional fetches, ms. */
const UNRESPONSIVE_MS = 30_000;

/** Fetches objects from members; remembers peers that served bad data. */
export class ObjectFetcher {
  readonly #avoidUntil = new Map<string, number>();
  readonly #unresponsiveUntil = new Map<string, number>();
  /** Open streams kept between fetches (see stream_pool.ts). */
  readonly streams: StreamPool<ObjectsMessage>;

  constructor(
    private readonly host: Host,
    private readonly opts: { avoidMs?: number; bulk?: BulkDialer } = {},
  ) {
    const bulk = opts.bulk;
    this.streams = new StreamPool(host, OBJECTS_PROTOCOL, objectsCodec, {
      dial: bulk ? (peer, signal) => bulk.open(peer, signal) : undefined,
      // The window bounds what a well-behaved peer sends ahead (give or take one batch of
      // objects larger than average); pause, and let libp2p reset a peer that ignores the
      // pause, only beyond that.
      readHighWater: DEFAULT_WINDOW_BYTES + 2 * OBJECTS_MAX_FRAME,
    });
  }

  /** Reset the streams kept open between fetches. */
  close(): void {
    this.streams.close();
  }

  /** Is this peer currently avoided for having sent a bad object? */
  isAvoided(peerId: string, now: number = Date.now()): boolean {
    return stillMarked(this.#avoidUntil, peerId, now);
  }

  /**
   * Did this peer stop answering (its streams failed or stalled until it was given up) within
   * the last UNRESPONSIVE_MS? Callers leave such a peer out where another can serve instead:
   * a stopped or cut-off member keeps its connection for a while but answers nothing.
   */
  isUnresponsive(peerId: string, now: number = Date.now()): boolean {
    return stillMarked(this.#unresponsiveUntil, peerId, now);
  }

  /** Record a peer given up for not answering (called by a fetch run). */
  unresponsive(peerId: string): void {
    this.#unresponsiveUntil.set(peerId, Date.now() + UNRESPONSIVE_MS);
  }

  /** Stop avoiding a peer (e.g. after an operator fixed its store). */
  forgive(peerId: string): void {
    this.#avoidUntil.delete(peerId);
  }

  /** Ask a peer which of `hashes` it holds (any number; sent in chunks). */
  async has(peerId: string, hashes: Hash[], signal?: AbortSignal): Promise<boolean[]> {
    const stream = await this.host.openStream(peerId, OBJECTS_PROTOCOL, { signal });
    const fs: ObjectsStream = new FramedStream(stream, objectsCodec, objectsCodec);
    try {
      const out: boolean[] = [];
      for (let i = 0; i < hashes.length; i += MAX_HAVE_HASHES) {
        const part = hashes.slice(i, i + MAX_HAVE_HASHES);
        await fs.write({ type: "have", hashes: part }, signal);
        const reply = await fs.expect("haveReply", signal);
        if (reply.type !== "haveReply" || reply.bits.length !== Math.ceil(part.length / 8)) {
          throw new WireDecodeError("invalid-field", `bad reply to have from ${peerId}`);
        }
        for (let j = 0; j < part.length; j++) out.push((reply.bits[j >> 3] & (1 << (j & 7))) !== 0);
      }
      await fs.close();
      return out;
    } catch (err) {
      fs.abort(err as Error);
      throw err;
    }
  }

  /**
   * Fetch `hashes` from `peers` (members), calling `onObject` once per distinct hash with
   * verified bytes. Resolves when every hash was delivered or is known to be unavailable;
   * rejects if `onObject` throws or the signal aborts (FetchError), after closing all streams.
   */
  async fetch(
    hashes: Hash[],
    peers: string[],
    onObject: ObjectSink,
    opts: FetchOptions = {},
  ): Promise<FetchResult> {
    const run = new FetchRun(this, this.host, onObject, opts);
    return await run.run(hashes, peers.filter((p) => p !== this.host.peerId));
  }

  /** Record a bad peer (called by a fetch run). */
  avoid(peerId: string): void {
    this.#avoidUntil.set(peerId, Date.now() + (this.opts.avoidMs ?? 10 * 60_000));
  }
}

/** Whether `peer`'s mark in `until` (peer -> expiry, ms) holds at `now`; expired marks go. */
function stillMarked(until: Map<string, number>, peer: string, now: number): boolean {
  const expiry = until.get(peer);
  if (expiry === undefined) return false;
  if (expiry <= now) {
    until.delete(peer);
    return false;
  }
  return true;
}

/** The state of one fetch() call. */
class FetchRun {
  readonly #fresh: Entry[] = [];
  #freshPos = 0;
  readonly #retry: Entry[] = [];
  readonly #peers: PeerState[] = [];
  readonly #badPeers: string[] = [];
  readonly #missing: Hash[] = [];
  #remaining = 0;
  #fetched = 0;
  #bytes = 0;
  #fatal: Error | null = null;
  #wakers: (() => void)[] = [];
  /** Objects doubled so far (see ENDGAME_MAX_DOUBLED). */
  #doubled = 0;
  /** Aborted once nothing is left to fetch: streams still being opened are not waited for. */
  readonly #finished = new AbortController();
  readonly #streamsPerPeer: number;
  readonly #window: number;
  readonly #windowBytes: number;
  readonly #batch: number;
  /** Running average size of received objects: converts windowBytes into a count. */
  #avgSize = 64 * 1024;
  readonly #stallMs: number;
  readonly #maxFailures: number;

  constructor(
    private readonly fetcher: ObjectFetcher,
    private readonly host: Host,
    private readonly onObject: ObjectSink,
    private readonly opts: FetchOptions,
  ) {
    this.#streamsPerPeer = Math.max(1, opts.streamsPerPeer ?? 2);
    this.#window = Math.max(1, opts.window ?? 512);
    this.#windowBytes = Math.max(1, opts.windowBytes ?? DEFAULT_WINDOW_BYTES);
    this.#batch = Math.min(MAX_WANT_HASHES, Math.max(1, opts.batch ?? 16));
    this.#stallMs = opts.stallMs ?? 30_000;
    this.#maxFailures = opts.maxPeerFailures ?? 3;
  }

  async run(hashes: Hash[], peerIds: string[]): Promise<FetchResult> {
    // Aborted before it began (between two fetches of a caller): the abort event is gone.
    if (this.opts.signal?.aborted) {
      throw new FetchError(`fetch aborted: ${this.opts.signal.reason}`);
    }
    const seen = new Set<string>();
    for (const h of hashes) {
      const key = toHex(h);
      if (seen.has(key)) continue;
      seen.add(key);
      this.#fresh.push({
        hash: h,
        lackedBy: null,
        done: false,
        askedAt: 0,
        doubled: false,
        holders: 0,
      });
    }
    this.#remaining = this.#fresh.length;
    for (const id of new Set(peerIds)) {
      if (!this.fetcher.isAvoided(id)) {
        this.#peers.push({
          id,
          usable: true,
          failures: 0,
          streams: new Set(),
          answered: 0,
          since: 0,
        });
      }
    }
    if (this.#remaining > 0) {
      const onAbort = () =>
        this.#fail(new FetchError(`fetch aborted: ${this.opts.signal?.reason}`));
      this.opts.signal?.addEventListener("abort", onAbort, { once: true });
      const watchdog = setInterval(
        () => this.#checkStalls(),
        Math.min(ENDGAME_AFTER_MS, this.#stallMs / 2),
      );
      try {
        this.#checkUnfetchable();
        const workers: Promise<void>[] = [];
        for (const peer of this.#peers) {
          for (let i = 0; i < this.#streamsPerPeer; i++) workers.push(this.#work(peer));
        }
        await Promise.all(workers);
      } finally {
        this.#finished.abort(new FetchError("fetch ended"));
        clearInterval(watchdog);
        this.opts.signal?.removeEventListener("abort", onAbort);
      }
      if (this.#fatal !== null) throw this.#fatal;
      // Workers exit when their peer becomes unusable; anything left is unavailable.
      this.#checkUnfetchable();
    }
    return {
      fetched: this.#fetched,
      bytes: this.#bytes,
      missing: this.#missing,
      badPeers: this.#badPeers,
    };
  }

  /** One stream's loop: open, keep the window of requests in flight, verify and deliver. */
  async #work(peer: PeerState): Promise<void> {
    while (peer.usable && this.#remaining > 0 && this.#fatal === null) {
      if (!this.#hasWorkFor(peer)) {
        await this.#waitForChange();
        continue;
      }
      const worker: Worker = {
        peer,
        fs: null,
        inflight: [],
        lastProgress: Date.now(),
        received: 0,
      };
      peer.streams.add(worker);
      let reused = false;
      try {
        const timer = deadline(Math.min(this.#stallMs, 5_000));
        const lease = await this.fetcher.streams
          .acquire(peer.id, AbortSignal.any([timer.signal, this.#finished.signal]))
          .finally(() => {
            if (timer.signal.aborted) worker.silent = true;
            timer.clear();
          });
        worker.fs = lease.fs;
        reused = lease.reused;
        await this.#pump(worker);
        if (worker.inflight.length === 0 && peer.usable && this.#fatal === null) {
          // Every request was answered: the stream is clean and can serve the next fetch.
          this.fetcher.streams.release(peer.id, worker.fs);
        } else {
          worker.fs.abort(new Error("fetch ended"));
        }
      } catch (err) {
        worker.fs?.abort(err as Error);
        this.#requeue(worker.inflight);
        worker.inflight = [];
        // Everything arrived through other streams while this one was being opened.
        if (this.#remaining === 0 || this.#finished.signal.aborted) return;
        // A pooled stream the peer closed while it was idle fails at once: not the peer's
        // fault, try a fresh one.
        const staleIdle = reused && worker.received === 0;
        if (peer.usable && this.#fatal === null && !staleIdle) {
          peer.failures++;
          if (peer.failures >= this.#maxFailures) {
            this.host.logger.warn(
              `giving up on ${peer.id} for this fetch: ${(err as Error).message}`,
            );
            // Only silence counts against it in later fetches: a refusal (not yet told of a
            // new member, say) or a reset is answered at once, and does not hold a fetch up.
            if (worker.silent) this.fetcher.unresponsive(peer.id);
            this.#dropPeer(peer);
          }
        }
      } finally {
        peer.streams.delete(worker);
      }
    }
  }

  /** Request and receive on one open stream until there is no work left for it. */
  async #pump(w: Worker): Promise<void> {
    const fs = w.fs!;
    while (w.peer.usable && this.#fatal === null) {
      // Top up the pipeline in whole batches (a partial one only when it would otherwise idle).
      const limit = Math.max(
        1,
        Math.min(this.#window, Math.floor(this.#windowBytes / this.#avgSize)),
      );
      const batchSize = Math.min(this.#batch, limit);
      while (w.inflight.length + batchSize <= limit || w.inflight.length === 0) {
        const batch = this.#take(w.peer, Math.min(batchSize, limit - w.inflight.length));
        if (batch.length === 0) break;
        w.inflight.push(...batch);
        await fs.write({ type: "want", hashes: batch.map((e) => e.hash) });
      }
      if (w.inflight.length === 0) return;
      const msg = await fs.read();
      if (msg === null) throw new FetchError(`${w.peer.id} closed the stream`);
      if (!w.peer.usable || this.#fatal !== null) return; // dropped while we waited
      w.lastProgress = Date.now();
      w.received++;
      w.peer.answered++;
      const entry = w.inflight.shift();
      if (entry === undefined) {
        this.#badPeer(w.peer, `sent an unrequested ${msg.type}`);
        return;
      }
      if (msg.type === "missing" && hashEquals(msg.hash, entry.hash)) {
        (entry.lackedBy ??= new Set()).add(w.peer.id);
        this.#requeue([entry]);
        this.#checkUnfetchable();
        continue;
      }
      if (msg.type !== "object" || !hashEquals(msg.hash, entry.hash)) {
        w.inflight.unshift(entry);
        this.#badPeer(w.peer, `answered out of order (${msg.type})`);
        return;
      }
      if (!hashes(msg.data, entry.hash)) {
        w.inflight.unshift(entry);
        this.#badPeer(w.peer, `sent corrupt object ${toHex(entry.hash)}`);
        return;
      }
      if (entry.done) continue; // delivered by another stream after a requeue
      entry.done = true;
      this.#avgSize = Math.max(1024, 0.9 * this.#avgSize + 0.1 * msg.data.length);
      this.#remaining--;
      this.#fetched++;
      this.#bytes += msg.data.length;
      w.delivering = true;
      try {
        await this.onObject(entry.hash, msg.data);
      } catch (err) {
        this.#fail(
          new FetchError(`storing ${toHex(entry.hash)} failed: ${(err as Error).message}`),
        );
        throw err;
      } finally {
        w.delivering = false;
        w.lastProgress = Date.now();
      }
      if (this.#remaining === 0) this.#allDone();
    }
  }

  /**
   * Nothing is left: wake idle workers, stop opening streams no one needs now, and drop the
   * streams still owing answers (for objects another stream delivered first, see endgame):
   * the fetch does not wait for a slow peer to finish sending what is no longer needed.
   */
  #allDone(): void {
    this.#finished.abort(new FetchError("everything arrived"));
    for (const p of this.#peers) {
      for (const w of p.streams) {
        if (w.inflight.length > 0) w.fs?.abort(new FetchError("answers no longer needed"));
      }
    }
    this.#wake();
  }

  /** Up to n not-done entries this peer has not said it lacks; retries first. */
  #take(peer: PeerState, n: number): Entry[] {
    const out: Entry[] = [];
    for (let i = 0; i < this.#retry.length && out.length < n;) {
      const e = this.#retry[i];
      if (e.done) {
        this.#retry.splice(i, 1);
      } else if (e.lackedBy?.has(peer.id)) {
        i++;
      } else {
        this.#retry.splice(i, 1);
        out.push(e);
      }
    }
    while (out.length < n && this.#freshPos < this.#fresh.length) {
      const e = this.#fresh[this.#freshPos++];
      if (!e.done) out.push(e);
    }
    if (out.length === 0) out.push(...this.#endgame(peer, n));
    const now = Date.now();
    for (const e of out) {
      e.askedAt = now;
      e.holders++;
    }
    if (out.length > 0 && peer.since === 0) peer.since = now;
    return out;
  }

  /** Answers per ms a peer gave in this fetch so far (0 before it was asked anything). */
  #pace(peer: PeerState, now: number): number {
    return peer.since === 0 ? 0 : peer.answered / Math.max(1, now - peer.since);
  }

  /** Peers whose outstanding objects `peer` may take over (it is clearly faster). */
  #slowerThan(peer: PeerState): PeerState[] {
    const now = Date.now();
    const pace = this.#pace(peer, now);
    return this.#peers.filter((o) => o !== peer && pace > 2 * this.#pace(o, now));
  }

  /** Up to n objects other peers have had outstanding for a while (see ENDGAME_AFTER_MS). */
  #endgame(peer: PeerState, n: number): Entry[] {
    const out: Entry[] = [];
    for (const e of this.#stuckElsewhere(peer)) {
      if (out.length >= n) break;
      e.doubled = true;
      this.#doubled++;
      out.push(e);
    }
    return out;
  }

  /** Whether a stream of `peer` could take over objects stuck at another peer now. */
  #endgameFor(peer: PeerState): boolean {
    return !this.#stuckElsewhere(peer).next().done;
  }

  /**
   * Objects `peer` may double now: outstanding long enough at a peer it is much faster than,
   * not doubled yet, not known to be lacked by it, within the fetch's budget. From the back of
   * each slow stream: answers come in order, so what it sends next is at the front anyway, and
   * what it would send last is what holds the fetch up.
   */
  *#stuckElsewhere(peer: PeerState): Generator<Entry> {
    const due = Date.now() - ENDGAME_AFTER_MS;
    for (const other of this.#slowerThan(peer)) {
      for (const w of other.streams) {
        for (let i = w.inflight.length - 1; i >= 0; i--) {
          if (this.#doubled >= ENDGAME_MAX_DOUBLED) return;
          const e = w.inflight[i];
          if (e.done || e.doubled || e.askedAt > due || e.lackedBy?.has(peer.id)) continue;
          yield e;
        }
      }
    }
  }

  #hasWorkFor(peer: PeerState): boolean {
    if (this.#freshPos < this.#fresh.length) return true;
    return this.#retry.some((e) => !e.done && !e.lackedBy?.has(peer.id)) ||
      this.#endgameFor(peer);
  }

  /** Entries a stream no longer waits for: back to the queue unless done or still asked. */
  #requeue(entries: Entry[]): void {
    let any = false;
    for (const e of entries) {
      e.holders = Math.max(0, e.holders - 1);
      if (!e.done && e.holders === 0) {
        this.#retry.push(e);
        any = true;
      }
    }
    if (any) this.#wake();
  }

  #badPeer(peer: PeerState, what: string): void {
    this.host.logger.warn(`peer ${peer.id} ${what}; avoiding it`);
    this.fetcher.avoid(peer.id);
    if (!this.#badPeers.includes(peer.id)) this.#badPeers.push(peer.id);
    this.#dropPeer(peer);
  }

  /** Stop using a peer: abort its streams (their work is requeued by their workers). */
  #dropPeer(peer: PeerState): void {
    if (!peer.usable) return;
    peer.usable = false;
    for (const w of peer.streams) {
      this.#requeue(w.inflight);
      w.inflight = [];
      w.fs?.abort(new FetchError(`dropped peer ${peer.id}`));
    }
    this.#checkUnfetchable();
    this.#wake();
  }

  /** Entries no usable peer can provide become `missing`. */
  #checkUnfetchable(): void {
    const usable = this.#peers.filter((p) => p.usable);
    const unavailable = (e: Entry) =>
      !e.done && usable.every((p) => e.lackedBy !== null && e.lackedBy.has(p.id));
    const give = (e: Entry) => {
      e.done = true;
      this.#remaining--;
      this.#missing.push(e.hash);
    };
    if (usable.length === 0) {
      for (const e of this.#retry) if (!e.done) give(e);
      for (let i = this.#freshPos; i < this.#fresh.length; i++) {
        if (!this.#fresh[i].done) give(this.#fresh[i]);
      }
      this.#freshPos = this.#fresh.length;
      // In-flight entries of dropped peers were requeued into #retry before this point.
    } else {
      for (const e of this.#retry) if (unavailable(e)) give(e);
    }
    this.#retry.splice(0, this.#retry.length, ...this.#retry.filter((e) => !e.done));
    if (this.#remaining === 0) this.#allDone();
  }

  #checkStalls(): void {
    const now = Date.now();
    for (const p of this.#peers) {
      for (const w of p.streams) {
        if (!w.delivering && w.inflight.length > 0 && now - w.lastProgress > this.#stallMs) {
          w.silent = true;
          w.fs?.abort(new FetchError(`no answer from ${p.id} for ${this.#stallMs} ms`));
        }
      }
    }
    // Idle streams wait for a change; objects outstanding long enough elsewhere are one.
    if (this.#freshPos >= this.#fresh.length && this.#remaining > 0) this.#wake();
  }

  #fail(err: Error): void {
    if (this.#fatal !== null) return;
    this.#fatal = err;
    for (const p of this.#peers) {
      for (const w of p.streams) w.fs?.abort(err);
    }
    this.#wake();
  }

  #waitForChange(): Promise<void> {
    return new Promise((resolve) => this.#wakers.push(resolve));
  }

  #wake(): void {
    const w = this.#wakers;
    this.#wakers = [];
    for (const f of w) f();
  }
}

/**
 * Whether `data` hashes to `hash`. Hashing is most of this side's CPU in a bulk transfer, so
 * the digest is compared as node:crypto returns it, without sha256()'s copy to a plain buffer
 * (~10 us per call here, a quarter of hashing 64 KiB).
 */
function hashes(data: Uint8Array, hash: Hash): boolean {
  return hashEquals(createHash("sha256").update(data).digest(), hash);
}
