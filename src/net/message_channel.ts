/**
 * /filesync/raft/1: a one-way "message channel" carrying batches of opaque byte strings
 * between members; the Raft node's Transport is adapted onto it.
 *
 * Raft tolerates lost messages (it retries on its own timers) but not a transport that blocks
 * its loop, so `send()` never waits: it hands the batch to a long-lived outbound stream per
 * peer, and drops it (returning false) when that stream's queue is over `maxQueuedBytes`, or
 * while the peer is unreachable and we are backing off. Lost streams are reopened on the next
 * send after an exponential backoff. Each direction uses its own stream (we write to ours,
 * read theirs), which keeps message order per sender without any handshake.
 */
import { raftCodec, type RaftMessage } from "./codec.ts";
import { WireDecodeError } from "./errors.ts";
import { deadline } from "./deadline.ts";
import { FramedStream } from "./framed_stream.ts";
import type { Host } from "./host.ts";

/** Protocol id of the raft message channel. */
export const RAFT_PROTOCOL = "/filesync/raft/1";

/** Receives every batch from a member, in the order that member sent them. */
export type BatchHandler = (from: string, batch: Uint8Array[]) => void;

/** Options of MessageChannel. */
export interface MessageChannelOptions {
  /** Protocol id (default RAFT_PROTOCOL). */
  protocol?: string;
  /** Bytes that may wait per peer before further batches are dropped (default 8 MiB). */
  maxQueuedBytes?: number;
  /** First reconnect delay after a failure, ms (default 50). */
  backoffMinMs?: number;
  /** Longest reconnect delay, ms (default 2,000). */
  backoffMaxMs?: number;
  /** Time allowed to open a stream, ms (default 5,000). */
  dialTimeoutMs?: number;
}

/** Counters, for status output and tests. */
export interface MessageChannelStats {
  sentBatches: number;
  droppedBatches: number;
  receivedBatches: number;
  reconnects: number;
}

type RaftStream = FramedStream<RaftMessage, RaftMessage>;

interface PeerLink {
  stream: RaftStream | null;
  connecting: boolean;
  /** Frames waiting for the stream being opened. */
  pending: Uint8Array[];
  pendingBytes: number;
  failures: number;
  retryAt: number;
  /** When the current stream was opened (ms since the epoch). */
  openedAt: number;
}

/** The raft message channel of one host. Create with `openMessageChannel`. */
export class MessageChannel {
  readonly stats: MessageChannelStats = {
    sentBatches: 0,
    droppedBatches: 0,
    receivedBatches: 0,
    reconnects: 0,
  };
  readonly #links = new Map<string, PeerLink>();
  readonly #inbound = new Set<RaftStream>();
  readonly #protocol: string;
  readonly #maxQueued: number;
  readonly #backoffMin: number;
  readonly #backoffMax: number;
  readonly #dialTimeout: number;
  #closed = false;

  constructor(
    private readonly host: Host,
    private readonly onBatch: BatchHandler,
    opts: MessageChannelOptions = {},
  ) {
    this.#protocol = opts.protocol ?? RAFT_PROTOCOL;
    this.#maxQueued = opts.maxQueuedBytes ?? 8 * 1024 * 1024;
    this.#backoffMin = opts.backoffMinMs ?? 50;
    this.#backoffMax = opts.backoffMaxMs ?? 2_000;
    this.#dialTimeout = opts.dialTimeoutMs ?? 5_000;
  }

  /** Register the inbound handler (called by openMessageChannel). */
  async start(): Promise<void> {
    await this.host.handle(
      this.#protocol,
      (stream, peer, connection) =>
        this.#serve(
          new FramedStream(stream, raftCodec, raftCodec),
          peer,
          connection.timeline.open,
        ),
      { membersOnly: true, maxInboundStreams: 8, maxOutboundStreams: 8 },
    );
  }

  /**
   * Send a batch to a member without waiting. Returns false if it was dropped (peer
   * unreachable and backing off, or too much already queued for it). Throws WireEncodeError
   * only for a batch that could never be sent (empty message, too many, too large).
   */
  send(to: string, batch: Uint8Array[]): boolean {
    if (this.#closed) return false;
    const frame = raftCodec.encodeFrame({ type: "batch", msgs: batch });
    let link = this.#links.get(to);
    if (link === undefined) {
      link = {
        stream: null,
        connecting: false,
        pending: [],
        pendingBytes: 0,
        failures: 0,
        retryAt: 0,
        openedAt: 0,
      };
      this.#links.set(to, link);
    }
    if (link.stream !== null) {
      if (link.stream.queuedBytes + frame.length > this.#maxQueued) return this.#drop();
      try {
        link.stream.writeFrame(frame);
        this.stats.sentBatches++;
        return true;
      } catch {
        link.stream = null; // closed under us; fall through to reconnect
      }
    }
    if (link.pendingBytes + frame.length > this.#maxQueued) return this.#drop();
    if (!link.connecting && Date.now() < link.retryAt) return this.#drop();
    link.pending.push(frame);
    link.pendingBytes += frame.length;
    if (!link.connecting) this.#connect(to, link);
    return true;
  }

  /** Close every stream; further sends are dropped. */
  async close(): Promise<void> {
    this.#closed = true;
    const closing: Promise<void>[] = [];
    for (const link of this.#links.values()) {
      if (link.stream !== null) closing.push(link.stream.close());
      link.stream = null;
      link.pending = [];
      link.pendingBytes = 0;
    }
    for (const s of this.#inbound) s.abort(new Error("channel closed"));
    this.#links.clear();
    await Promise.all(closing);
    await this.host.unhandle(this.#protocol).catch(() => {});
  }

  #drop(): false {
    this.stats.droppedBatches++;
    return false;
  }

  #connect(to: string, link: PeerLink): void {
    link.connecting = true;
    (async () => {
      const timer = deadline(this.#dialTimeout);
      try {
        const stream = await this.host.openStream(to, this.#protocol, { signal: timer.signal });
        if (this.#closed) {
          stream.abort(new Error("channel closed"));
          return;
        }
        const fs: RaftStream = new FramedStream(stream, raftCodec, raftCodec);
        stream.addEventListener("close", () => {
          if (link.stream === fs) {
            link.stream = null;
            this.#failed(link);
          }
        });
        link.failures = 0;
        link.stream = fs;
        link.openedAt = Date.now();
        const pending = link.pending;
        link.pending = [];
        link.pendingBytes = 0;
        for (const frame of pending) {
          fs.writeFrame(frame);
          this.stats.sentBatches++;
        }
      } catch (err) {
        this.stats.droppedBatches += link.pending.length;
        link.pending = [];
        link.pendingBytes = 0;
        this.#failed(link);
        if (link.failures === 1) {
          this.host.logger.info?.(`raft channel to ${to} unavailable: ${(err as Error).message}`);
        }
      } finally {
        timer.clear();
        link.connecting = false;
      }
    })();
  }

  /**
   * A peer opened an inbound stream over a connection newer than our outbound stream to it:
   * it came back (perhaps as a new process after a crash) and our stream belongs to the dead
   * connection, where writes vanish until the transport's idle timeout. Drop it (and any
   * backoff) so the next send opens a fresh stream over the live connection. Streams on the
   * same connection are left alone, or two peers would keep resetting each other's streams.
   */
  #peerReconnected(peer: string, connectionOpenedAt: number): void {
    const link = this.#links.get(peer);
    if (link === undefined || link.stream === null) return;
    if (link.openedAt >= connectionOpenedAt) return;
    const old = link.stream;
    link.stream = null;
    link.failures = 0;
    link.retryAt = 0;
    if (old !== null) old.abort(new Error("peer reconnected"));
  }

  #failed(link: PeerLink): void {
    link.failures++;
    this.stats.reconnects++;
    const delay = Math.min(this.#backoffMax, this.#backoffMin * 2 ** (link.failures - 1));
    link.retryAt = Date.now() + delay;
  }

  async #serve(fs: RaftStream, from: string, connectionOpenedAt: number): Promise<void> {
    this.#inbound.add(fs);
    this.#peerReconnected(from, connectionOpenedAt);
    try {
      while (true) {
        const msg = await fs.read();
        if (msg === null) break;
        // Membership is checked per batch: a removed member is cut off at once.
        if (!this.host.gate.isMember(from)) {
          fs.abort(new Error("no longer a member"));
          return;
        }
        this.stats.receivedBatches++;
        try {
          this.onBatch(from, msg.msgs);
        } catch (err) {
          this.host.logger.warn(`raft batch handler threw: ${(err as Error).message}`);
        }
      }
      await fs.close();
    } catch (err) {
      if (err instanceof WireDecodeError) {
        this.host.logger.warn(`raft channel from ${from}: ${err.message}`);
      }
      fs.abort(err as Error);
    } finally {
      this.#inbound.delete(fs);
    }
  }
}

/** Create the raft message channel of a host and start serving it. */
export async function openMessageChannel(
  host: Host,
  onBatch: BatchHandler,
  opts: MessageChannelOptions = {},
): Promise<MessageChannel> {
  const ch = new MessageChannel(host, onBatch, opts);
  await ch.start();
  return ch;
}
